import com.sun.jna.Library;
import com.sun.jna.Memory;
import com.sun.jna.Native;
import com.sun.jna.Pointer;
import com.sun.jna.Structure;
import com.sun.jna.ptr.IntByReference;
import com.sun.jna.ptr.LongByReference;
import com.sun.jna.ptr.PointerByReference;
import com.sun.jna.ptr.ShortByReference;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * A thin Java wrapper over libwechat_oauth (JNA). Every decision comes from
 * the library: no URL building, state check or token call in Java. A client
 * is thread-safe; close it when done.
 */
public final class WechatOAuth implements AutoCloseable {

    /** A failed library call: the result code, the library's message, and WeChat's errcode if any. */
    public static final class WechatOAuthException extends RuntimeException {
        private static final long serialVersionUID = 1L;
        public final int result;
        public final long errcode;

        WechatOAuthException(int result, String message, long errcode) {
            super(message);
            this.result = result;
            this.errcode = errcode;
        }
    }

    /** {@code wechat_oauth_str}: a borrowed UTF-8 string. */
    public static class Str extends Structure {
        public Pointer data;
        public long len;

        public static class ByValue extends Str implements Structure.ByValue {}

        @Override
        protected List<String> getFieldOrder() {
            return List.of("data", "len");
        }

        String text() {
            return data == null ? null : new String(data.getByteArray(0, (int) len), StandardCharsets.UTF_8);
        }
    }

    /** {@code wechat_oauth_request}. */
    public static class Request extends Structure {
        public Str method = new Str();
        public Str path = new Str();
        public Str query = new Str();
        public Str cookie = new Str();
        public Str user_agent = new Str();
        public Str accept = new Str();
        public Str x_requested_with = new Str();
        public Str accept_language = new Str();
        public Str client_address = new Str();
        public Str x_forwarded_for = new Str();
        public Str x_original_uri = new Str();
        public Str x_original_method = new Str();
        public Str origin = new Str();
        public Str access_control_request_method = new Str();

        @Override
        protected List<String> getFieldOrder() {
            return List.of("method", "path", "query", "cookie", "user_agent", "accept", "x_requested_with", "accept_language",
                    "client_address", "x_forwarded_for", "x_original_uri", "x_original_method", "origin",
                    "access_control_request_method");
        }
    }

    interface Lib extends Library {
        Str.ByValue wechat_oauth_version();
        int wechat_oauth_result_message(int result, byte[] buf, long len, LongByReference written);
        int wechat_oauth_last_error(byte[] buf, long len, LongByReference written);
        int wechat_oauth_client_new_from_file(byte[] path, long len, PointerByReference out);
        void wechat_oauth_client_free(Pointer client);
        int wechat_oauth_client_decide(Pointer client, Request request, PointerByReference out);
        int wechat_oauth_client_decide_with_body(Pointer client, Request request, byte[] body, long len,
                                                 PointerByReference out);
        int wechat_oauth_decision_body_limit(Pointer decision, LongByReference out);
        int wechat_oauth_client_complete(Pointer client, Pointer decision);
        int wechat_oauth_client_login(Pointer client, byte[] returnPath, long len, PointerByReference out);
        int wechat_oauth_client_session_identity(Pointer client, byte[] cookie, long len, PointerByReference out);
        int wechat_oauth_decision_get_kind(Pointer decision, IntByReference out);
        int wechat_oauth_decision_status(Pointer decision, ShortByReference out);
        int wechat_oauth_decision_header_count(Pointer decision, LongByReference out);
        int wechat_oauth_decision_header(Pointer decision, long index, Str name, Str value);
        int wechat_oauth_decision_body(Pointer decision, Str out);
        int wechat_oauth_decision_errcode(Pointer decision, LongByReference out);
        int wechat_oauth_decision_identity(Pointer decision, PointerByReference out);
        void wechat_oauth_decision_free(Pointer decision);
        int wechat_oauth_identity_get(Pointer identity, int field, Str out);
        void wechat_oauth_identity_free(Pointer identity);
    }

    private static final Lib LIB = Native.load(libraryPath(), Lib.class);
    // The header's constants (a test checks each against include/wechat_oauth.h).
    static final int NO_SESSION = 4000;
    static final int FIELD_OPENID = 1;
    static final int FIELD_UNIONID = 2;
    static final int FIELD_SCOPE = 3;
    static final int FIELD_NICKNAME = 4;
    static final int FIELD_HEADIMGURL = 5;
    static final int FIELD_USER = 6;
    static final int FIELD_WECOM_USERID = 7;
    static final int FIELD_WECOM_CORPID = 8;
    static final int FIELD_WECOM_NAME = 9;
    static final int FIELD_WECOM_DEPARTMENT = 10;

    private Pointer client;

    /** A client for the TOML config file at {@code configPath} (the gateway's format). */
    public WechatOAuth(String configPath) {
        byte[] path = configPath.getBytes(StandardCharsets.UTF_8);
        PointerByReference out = new PointerByReference();
        check(LIB.wechat_oauth_client_new_from_file(path, path.length, out), 0);
        client = out.getValue();
    }

    public static String version() {
        return LIB.wechat_oauth_version().text();
    }

    private static String libraryPath() {
        String explicit = System.getenv("WECHAT_OAUTH_LIBRARY");
        if (explicit != null && !explicit.isEmpty()) {
            return explicit;
        }
        for (String profile : new String[] {"release", "debug"}) {
            File f = new File(System.getProperty("wechat.repo", "."), "target/" + profile + "/libwechat_oauth.so");
            if (f.isFile()) {
                return f.getAbsolutePath();
            }
        }
        throw new IllegalStateException("libwechat_oauth.so not found: build it or set WECHAT_OAUTH_LIBRARY");
    }

    static void check(int result, long errcode) {
        if (result == 0) {
            return;
        }
        byte[] buf = new byte[1024];
        LongByReference written = new LongByReference();
        String message = "wechat_oauth error " + result;
        if (LIB.wechat_oauth_result_message(result, buf, buf.length, written) == 0) {
            message = new String(buf, 0, (int) written.getValue(), StandardCharsets.UTF_8);
        }
        if (LIB.wechat_oauth_last_error(buf, buf.length, written) == 0 && written.getValue() > 0) {
            message += ": " + new String(buf, 0, (int) written.getValue(), StandardCharsets.UTF_8);
        }
        throw new WechatOAuthException(result, message, errcode);
    }

    private Pointer live() {
        if (client == null) {
            throw new IllegalStateException("closed");
        }
        return client;
    }

    /** Points a Str at a native copy of {@code value}, kept alive in {@code keep}. */
    private static void fill(Str str, String value, List<Memory> keep) {
        if (value == null) {
            str.data = null;
            str.len = 0;
            return;
        }
        byte[] bytes = value.getBytes(StandardCharsets.UTF_8);
        Memory memory = new Memory(Math.max(1, bytes.length));
        memory.write(0, bytes, 0, bytes.length);
        keep.add(memory);
        str.data = memory;
        str.len = bytes.length;
    }

    /** What to do with a request; header values may be null (absent). Pure: no IO. */
    public Decision decide(String method, String path, String query, String cookie, String userAgent,
                           String accept, String xRequestedWith, String acceptLanguage) {
        return decide(method, path, query, cookie, userAgent, accept, xRequestedWith, acceptLanguage, null, null);
    }

    /**
     * As {@link #decide(String, String, String, String, String, String, String, String)}, with the peer's
     * IP address ({@code clientAddress}: per-client limits) and the {@code X-Forwarded-For} header (read
     * only from a peer in {@code trusted_proxies}).
     */
    public Decision decide(String method, String path, String query, String cookie, String userAgent,
                           String accept, String xRequestedWith, String acceptLanguage,
                           String clientAddress, String xForwardedFor) {
        return decide(new String[] {method, path, query, cookie, userAgent, accept, xRequestedWith,
                acceptLanguage, clientAddress, xForwardedFor, null, null}, null);
    }

    /**
     * The decision for a request given as the fields of {@code wechat_oauth_request} in order (method,
     * path, query, cookie, user_agent, accept, x_requested_with, accept_language, client_address,
     * x_forwarded_for, x_original_uri, x_original_method, origin, access_control_request_method; null =
     * absent). With {@code body} (the request
     * body, read after a {@link Decision#NEEDS_BODY} decision, at most its {@link Decision#bodyLimit()}
     * plus one bytes) the library decides again with it.
     */
    public Decision decide(String[] fields, byte[] body) {
        List<Memory> keep = new ArrayList<>();
        Request request = new Request();
        Str[] slots = {request.method, request.path, request.query, request.cookie, request.user_agent,
                request.accept, request.x_requested_with, request.accept_language, request.client_address,
                request.x_forwarded_for, request.x_original_uri, request.x_original_method, request.origin,
                request.access_control_request_method};
        for (int i = 0; i < slots.length; i++) {
            fill(slots[i], i < fields.length ? fields[i] : null, keep);
        }
        PointerByReference out = new PointerByReference();
        if (body == null) {
            check(LIB.wechat_oauth_client_decide(live(), request, out), 0);
        } else {
            check(LIB.wechat_oauth_client_decide_with_body(live(), request, body, body.length, out), 0);
        }
        return new Decision(out.getValue());
    }

    /** Performs a decision's IO (the code exchange), blocking this thread; it then responds. */
    public void complete(Decision decision) {
        check(LIB.wechat_oauth_client_complete(live(), decision.handle()), 0);
    }

    /** A redirect to WeChat's authorize page that returns to {@code returnPath}. */
    public Decision login(String returnPath) {
        byte[] rd = returnPath.getBytes(StandardCharsets.UTF_8);
        PointerByReference out = new PointerByReference();
        check(LIB.wechat_oauth_client_login(live(), rd, rd.length, out), 0);
        return new Decision(out.getValue());
    }

    /** The identity of the session in a Cookie header, or null. */
    public Map<String, String> sessionIdentity(String cookieHeader) {
        byte[] cookie = cookieHeader.getBytes(StandardCharsets.UTF_8);
        PointerByReference out = new PointerByReference();
        int result = LIB.wechat_oauth_client_session_identity(live(), cookie, cookie.length, out);
        if (result == NO_SESSION) {
            return null;
        }
        check(result, 0);
        try {
            return identityFields(out.getValue());
        } finally {
            LIB.wechat_oauth_identity_free(out.getValue());
        }
    }

    static Map<String, String> identityFields(Pointer identity) {
        Map<String, String> fields = new LinkedHashMap<>();
        String[] names = {"openid", "unionid", "scope", "nickname", "headimgurl", "user",
            "wecom_userid", "wecom_corpid", "wecom_name", "wecom_department"};
        int[] ids = {FIELD_OPENID, FIELD_UNIONID, FIELD_SCOPE, FIELD_NICKNAME, FIELD_HEADIMGURL, FIELD_USER,
            FIELD_WECOM_USERID, FIELD_WECOM_CORPID, FIELD_WECOM_NAME, FIELD_WECOM_DEPARTMENT};
        Str value = new Str();
        for (int i = 0; i < names.length; i++) {
            check(LIB.wechat_oauth_identity_get(identity, ids[i], value), 0);
            value.read();
            fields.put(names[i], value.text());
        }
        return fields;
    }

    @Override
    public synchronized void close() {
        if (client != null) {
            LIB.wechat_oauth_client_free(client);
            client = null;
        }
    }

    /** One decision; close it when the response is written. */
    public static final class Decision implements AutoCloseable {
        public static final int PASS = 1;
        public static final int RESPOND = 2;
        public static final int NEEDS_IO = 3;
        public static final int NEEDS_BODY = 4;

        private Pointer decision;

        Decision(Pointer decision) {
            this.decision = decision;
        }

        Pointer handle() {
            if (decision == null) {
                throw new IllegalStateException("closed");
            }
            return decision;
        }

        public int kind() {
            IntByReference kind = new IntByReference();
            check(LIB.wechat_oauth_decision_get_kind(handle(), kind), 0);
            return kind.getValue();
        }

        /** The largest body a {@link #NEEDS_BODY} decision's route takes, in bytes. */
        public long bodyLimit() {
            LongByReference limit = new LongByReference();
            check(LIB.wechat_oauth_decision_body_limit(handle(), limit), 0);
            return limit.getValue();
        }

        public int status() {
            ShortByReference status = new ShortByReference();
            check(LIB.wechat_oauth_decision_status(handle(), status), 0);
            return Short.toUnsignedInt(status.getValue());
        }

        /** Response headers in order ({@code Set-Cookie} may repeat). */
        public List<String[]> headers() {
            LongByReference count = new LongByReference();
            check(LIB.wechat_oauth_decision_header_count(handle(), count), 0);
            List<String[]> headers = new ArrayList<>();
            Str name = new Str();
            Str value = new Str();
            for (long i = 0; i < count.getValue(); i++) {
                check(LIB.wechat_oauth_decision_header(handle(), i, name, value), 0);
                name.read();
                value.read();
                headers.add(new String[] {name.text(), value.text()});
            }
            return headers;
        }

        public byte[] body() {
            Str body = new Str();
            check(LIB.wechat_oauth_decision_body(handle(), body), 0);
            body.read();
            return body.data == null ? new byte[0] : body.data.getByteArray(0, (int) body.len);
        }

        /** WeChat's errcode behind this answer, 0 when none. */
        public long errcode() {
            LongByReference errcode = new LongByReference();
            check(LIB.wechat_oauth_decision_errcode(handle(), errcode), 0);
            return errcode.getValue();
        }

        /** The verified identity of a passing request, or null. */
        public Map<String, String> identity() {
            PointerByReference out = new PointerByReference();
            if (LIB.wechat_oauth_decision_identity(handle(), out) != 0) {
                return null;
            }
            return identityFields(out.getValue());
        }

        @Override
        public void close() {
            if (decision != null) {
                LIB.wechat_oauth_decision_free(decision);
                decision = null;
            }
        }
    }
}
