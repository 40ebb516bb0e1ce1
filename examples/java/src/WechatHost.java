import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;
import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * A Java 17 web host protected by WeChat login through libwechat_oauth:
 *
 *   WECHAT_OAUTH_CONFIG=config.toml PORT=8083 examples/java/serve
 *
 * Serves `/` (openid and nickname), the seed's `/bind` (binds the logged-in
 * WeChat identity to a local account, answers JSON), and the library's
 * routes under the prefix, exactly as the gateway does.
 */
public final class WechatHost {
    private static final Map<String, String> ACCOUNTS = new ConcurrentHashMap<>();

    public static void main(String[] args) throws IOException {
        String config = System.getenv("WECHAT_OAUTH_CONFIG");
        String port = System.getenv("PORT");
        if (config == null || port == null) {
            System.err.println("usage: WECHAT_OAUTH_CONFIG=config.toml PORT=8083 examples/java/serve");
            System.exit(2);
        }
        WechatOAuth oauth;
        try {
            oauth = new WechatOAuth(config);
        } catch (WechatOAuth.WechatOAuthException e) {
            System.err.println("wechat-oauth-java-host: " + e.getMessage());
            System.exit(1);
            return;
        }
        // The JDK server closes idle keep-alive connections past this many;
        // a client reusing one at that moment sees a reset. Keep room for busy sites.
        System.setProperty("sun.net.httpserver.maxIdleConnections",
                System.getProperty("sun.net.httpserver.maxIdleConnections", "4096"));
        String host = System.getenv().getOrDefault("HOST", "127.0.0.1");
        HttpServer server = HttpServer.create(new InetSocketAddress(host, Integer.parseInt(port)), 1024);
        ExecutorService pool = Executors.newFixedThreadPool(16);
        server.setExecutor(pool);
        server.createContext("/", exchange -> {
            try (exchange) {
                handle(oauth, exchange);
            } catch (RuntimeException | IOException e) {
                System.err.println("wechat-oauth-java-host: " + e);
            }
        });
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop(0);
            pool.shutdown();
            oauth.close();
        }));
        server.start();
        System.out.println("wechat-oauth-java-host " + WechatOAuth.version() + " listening on http://" + host + ":" + port);
    }

    private static String header(HttpExchange exchange, String name) {
        List<String> values = exchange.getRequestHeaders().get(name);
        if (values == null || values.isEmpty()) {
            return null;
        }
        return name.equalsIgnoreCase("Cookie") ? String.join("; ", values) : values.get(0);
    }

    private static void handle(WechatOAuth oauth, HttpExchange exchange) throws IOException {
        String path = exchange.getRequestURI().getRawPath();
        String query = exchange.getRequestURI().getRawQuery();
        WechatOAuth.Decision decision;
        try {
            String[] request = {exchange.getRequestMethod(), path, query, header(exchange, "Cookie"),
                    header(exchange, "User-Agent"), header(exchange, "Accept"),
                    header(exchange, "X-Requested-With"), header(exchange, "Accept-Language"),
                    exchange.getRemoteAddress().getAddress().getHostAddress(),
                    header(exchange, "X-Forwarded-For"), header(exchange, "X-Original-URI"),
                    header(exchange, "X-Original-Method"), header(exchange, "Origin"),
                    header(exchange, "Access-Control-Request-Method")};
            decision = oauth.decide(request, null);
            if (decision.kind() == WechatOAuth.Decision.NEEDS_BODY) {
                // A signed push or the SPA's code hand-off: at most the limit + 1 bytes.
                int limit = (int) Math.min(Integer.MAX_VALUE - 1, decision.bodyLimit());
                decision.close();
                byte[] body = exchange.getRequestBody().readNBytes(limit + 1);
                decision = oauth.decide(request, body);
            }
        } catch (WechatOAuth.WechatOAuthException e) {
            send(exchange, e.result < 2000 ? 400 : 500, "text/plain; charset=utf-8", "bad request\n");
            return;
        }
        try (WechatOAuth.Decision answered = decision) {
            oauth.complete(answered);
            if (answered.kind() != WechatOAuth.Decision.PASS) {
                for (String[] h : answered.headers()) {
                    exchange.getResponseHeaders().add(h[0], h[1]);
                }
                respond(exchange, answered.status(), answered.body());
                return;
            }
            for (String[] h : answered.headers()) {
                exchange.getResponseHeaders().add(h[0], h[1]);
            }
            Map<String, String> user = answered.identity();
            if (path.equals("/")) {
                send(exchange, 200, "text/html; charset=utf-8",
                        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>Java host</title></head>"
                        + "<body><h1>Java host</h1><p>openid: <code id=\"openid\">" + html(user == null ? null : user.get("openid"))
                        + "</code></p><p>nickname: <b id=\"nickname\">" + html(user == null ? null : user.get("nickname"))
                        + "</b></p><p><a href=\"/_wechat/logout\">log out</a></p></body></html>\n");
            } else if (path.equals("/bind") && user != null) {
                bind(exchange, user, query);
            } else {
                send(exchange, 404, "text/html; charset=utf-8", "<!doctype html><title>Not found</title><h1>Not found</h1>\n");
            }
        }
    }

    /** Seed 002's /bind: the logged-in WeChat user binds a local account. */
    private static void bind(HttpExchange exchange, Map<String, String> user, String query) throws IOException {
        String account = null;
        String form = query;
        if (exchange.getRequestMethod().equals("POST")) {
            form = new String(exchange.getRequestBody().readNBytes(4096), StandardCharsets.UTF_8);
        }
        if (form != null) {
            for (String pair : form.split("&")) {
                String[] kv = pair.split("=", 2);
                if (kv.length == 2 && kv[0].equals("account")) {
                    account = URLDecoder.decode(kv[1], StandardCharsets.UTF_8);
                }
            }
        }
        if (account == null || account.isEmpty() || account.length() > 64) {
            send(exchange, 400, "application/json; charset=utf-8", "{\"error\":\"account_required\"}");
            return;
        }
        ACCOUNTS.put(user.get("openid"), account);
        send(exchange, 200, "application/json; charset=utf-8",
                "{\"bound\":true,\"openid\":" + json(user.get("openid")) + ",\"unionid\":" + json(user.get("unionid"))
                + ",\"nickname\":" + json(user.get("nickname")) + ",\"account\":" + json(account) + "}");
    }

    private static void send(HttpExchange exchange, int status, String type, String body) throws IOException {
        exchange.getResponseHeaders().set("Content-Type", type);
        respond(exchange, status, body.getBytes(StandardCharsets.UTF_8));
    }

    private static void respond(HttpExchange exchange, int status, byte[] body) throws IOException {
        boolean head = exchange.getRequestMethod().equals("HEAD");
        exchange.sendResponseHeaders(status, head || body.length == 0 ? -1 : body.length);
        if (!head && body.length > 0) {
            try (OutputStream out = exchange.getResponseBody()) {
                out.write(body);
            }
        }
    }

    private static String html(String s) {
        if (s == null) {
            return "";
        }
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\"", "&quot;").replace("'", "&#39;");
    }

    private static String json(String s) {
        if (s == null) {
            return "null";
        }
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        return b.append('"').toString();
    }
}
