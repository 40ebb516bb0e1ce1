<?php
/**
 * A thin PHP wrapper over libwechat_oauth (PHP 8 FFI). Every decision comes
 * from the library: no URL building, state check or token call in PHP.
 *
 * FFI must be enabled for this application: run PHP with `-d ffi.enable=1`
 * (see ./serve). The library path comes from WECHAT_OAUTH_LIBRARY, else the
 * repository's target/release or target/debug build.
 */
declare(strict_types=1);

/** A failed library call: the result code, the library's message, WeChat's errcode if any. */
final class WechatOAuthException extends RuntimeException
{
    public function __construct(public readonly int $result, string $message, public readonly int $errcode = 0)
    {
        parent::__construct($message, $result);
    }
}

final class WechatOAuth
{
    private static ?FFI $ffi = null;

    /** @param FFI\CData $client a `const wechat_oauth_client *` */
    private function __construct(private FFI\CData $client)
    {
    }

    /** The process-wide client for a config file (kept across requests). */
    public static function shared(string $configPath): self
    {
        $ffi = self::ffi();
        $out = $ffi->new('const wechat_oauth_client *');
        self::check($ffi->wechat_oauth_client_shared_from_file($configPath, strlen($configPath), FFI::addr($out)));
        return new self($out);
    }

    public function __destruct()
    {
        self::ffi()->wechat_oauth_client_free($this->client);
    }

    public static function version(): string
    {
        return self::copy(self::ffi()->wechat_oauth_version()) ?? '';
    }

    /**
     * What to do with a request. $request keys: method, path, query, cookie,
     * user_agent, accept, x_requested_with, accept_language, client_address
     * (the peer's IP: per-client limits), x_forwarded_for, x_original_uri,
     * x_original_method (null = absent). With $body (the request body, after
     * a NEEDS_BODY decision) the library decides again with it.
     */
    public function decide(array $request, ?string $body = null): WechatDecision
    {
        $ffi = self::ffi();
        $keep = [];
        $req = $ffi->new('wechat_oauth_request');
        foreach (self::REQUEST_FIELDS as $field) {
            self::fill($req->$field, $request[$field] ?? null, $keep);
        }
        $out = $ffi->new('wechat_oauth_decision *');
        if ($body === null) {
            self::check($ffi->wechat_oauth_client_decide($this->client, FFI::addr($req), FFI::addr($out)));
        } else {
            $len = strlen($body);
            $buf = $ffi->new("uint8_t[" . max(1, $len) . "]");
            FFI::memcpy($buf, $body, $len);
            self::check($ffi->wechat_oauth_client_decide_with_body(
                $this->client, FFI::addr($req), $ffi->cast('const uint8_t *', FFI::addr($buf)), $len, FFI::addr($out)));
        }
        return new WechatDecision($out);
    }

    /** `WECHAT_OAUTH_RESULT_NO_SESSION` (a test checks it against the header). */
    public const RESULT_NO_SESSION = 4000;

    /** The fields of `wechat_oauth_request`, in the header's order. */
    private const REQUEST_FIELDS = ['method', 'path', 'query', 'cookie', 'user_agent', 'accept', 'x_requested_with',
        'accept_language', 'client_address', 'x_forwarded_for', 'x_original_uri', 'x_original_method', 'origin',
        'access_control_request_method'];

    /** The decision for the current request of PHP's built-in server or FPM. */
    public function decideServer(array $server): WechatDecision
    {
        $uri = $server['REQUEST_URI'] ?? '/';
        $query = null;
        if (($q = strpos($uri, '?')) !== false) {
            $query = substr($uri, $q + 1);
            $uri = substr($uri, 0, $q);
        }
        $request = [
            'method' => $server['REQUEST_METHOD'] ?? 'GET',
            'path' => $uri,
            'query' => $query,
            'cookie' => $server['HTTP_COOKIE'] ?? null,
            'user_agent' => $server['HTTP_USER_AGENT'] ?? null,
            'accept' => $server['HTTP_ACCEPT'] ?? null,
            'x_requested_with' => $server['HTTP_X_REQUESTED_WITH'] ?? null,
            'accept_language' => $server['HTTP_ACCEPT_LANGUAGE'] ?? null,
            'client_address' => $server['REMOTE_ADDR'] ?? null,
            'x_forwarded_for' => $server['HTTP_X_FORWARDED_FOR'] ?? null,
            'x_original_uri' => $server['HTTP_X_ORIGINAL_URI'] ?? null,
            'x_original_method' => $server['HTTP_X_ORIGINAL_METHOD'] ?? null,
            'origin' => $server['HTTP_ORIGIN'] ?? null,
            'access_control_request_method' => $server['HTTP_ACCESS_CONTROL_REQUEST_METHOD'] ?? null,
        ];
        $decision = $this->decide($request);
        if ($decision->kind() === WechatDecision::NEEDS_BODY) {
            // A signed push or the SPA's code hand-off: at most the limit + 1 bytes.
            $body = (string) file_get_contents('php://input', false, null, 0, $decision->bodyLimit() + 1);
            $decision = $this->decide($request, $body);
        }
        return $decision;
    }

    /** Performs a decision's IO (the code exchange), blocking; it then responds. */
    public function complete(WechatDecision $decision): void
    {
        self::check(self::ffi()->wechat_oauth_client_complete($this->client, $decision->handle()));
    }

    /** A redirect to WeChat's authorize page that returns to $returnPath. */
    public function login(string $returnPath): WechatDecision
    {
        $ffi = self::ffi();
        $out = $ffi->new('wechat_oauth_decision *');
        self::check($ffi->wechat_oauth_client_login($this->client, $returnPath, strlen($returnPath), FFI::addr($out)));
        return new WechatDecision($out);
    }

    /** The identity of the session in a Cookie header, or null. */
    public function sessionIdentity(string $cookie): ?array
    {
        $ffi = self::ffi();
        $out = $ffi->new('wechat_oauth_identity *');
        $result = $ffi->wechat_oauth_client_session_identity($this->client, $cookie, strlen($cookie), FFI::addr($out));
        if ($result === self::RESULT_NO_SESSION) {
            return null;
        }
        self::check($result);
        try {
            return WechatDecision::identityFields($out);
        } finally {
            $ffi->wechat_oauth_identity_free($out);
        }
    }

    /** @internal */
    public static function ffi(): FFI
    {
        if (self::$ffi === null) {
            $header = file_get_contents(__DIR__ . '/../../include/wechat_oauth_cdef.h');
            self::$ffi = FFI::cdef($header, self::libraryPath());
        }
        return self::$ffi;
    }

    private static function libraryPath(): string
    {
        $explicit = getenv('WECHAT_OAUTH_LIBRARY');
        if ($explicit !== false && $explicit !== '') {
            return $explicit;
        }
        foreach (['release', 'debug'] as $profile) {
            $path = __DIR__ . "/../../target/$profile/libwechat_oauth.so";
            if (is_file($path)) {
                return $path;
            }
        }
        throw new WechatOAuthException(2001, 'libwechat_oauth.so not found: build it (cargo build --release -p wechat-oauth-ffi) or set WECHAT_OAUTH_LIBRARY');
    }

    /** Throws for a non-zero result, with the library's message and detail. */
    public static function check(int $result, int $errcode = 0): void
    {
        if ($result === 0) {
            return;
        }
        $ffi = self::ffi();
        $buf = $ffi->new('char[1024]');
        $written = $ffi->new('size_t');
        $message = "wechat_oauth error $result";
        if ($ffi->wechat_oauth_result_message($result, $buf, 1024, FFI::addr($written)) === 0) {
            $message = FFI::string($buf, $written->cdata);
        }
        if ($ffi->wechat_oauth_last_error($buf, 1024, FFI::addr($written)) === 0 && $written->cdata > 0) {
            $message .= ': ' . FFI::string($buf, $written->cdata);
        }
        throw new WechatOAuthException($result, $message, $errcode);
    }

    /** Copies a wechat_oauth_str into a PHP string (null when absent). */
    public static function copy(FFI\CData $str): ?string
    {
        return FFI::isNull($str->data) ? null : FFI::string($str->data, $str->len);
    }

    /** Points a wechat_oauth_str at a copy of $value kept alive in $keep. */
    private static function fill(FFI\CData $str, ?string $value, array &$keep): void
    {
        if ($value === null) {
            $str->data = null;
            $str->len = 0;
            return;
        }
        $len = strlen($value);
        $buf = self::ffi()->new('char[' . max(1, $len) . ']');
        FFI::memcpy($buf, $value, $len);
        $keep[] = $buf;
        $str->data = self::ffi()->cast('const char *', FFI::addr($buf));
        $str->len = $len;
    }
}

/** One decision; freed with the object. */
final class WechatDecision
{
    public const PASS = 1;
    public const RESPOND = 2;
    public const NEEDS_IO = 3;
    public const NEEDS_BODY = 4;

    /** `WECHAT_OAUTH_IDENTITY_FIELD_*`: the identity's fields by name. */
    public const IDENTITY_FIELDS = ['openid' => 1, 'unionid' => 2, 'scope' => 3, 'nickname' => 4, 'headimgurl' => 5, 'user' => 6, 'wecom_userid' => 7, 'wecom_corpid' => 8, 'wecom_name' => 9, 'wecom_department' => 10];

    public function __construct(private FFI\CData $decision)
    {
    }

    public function __destruct()
    {
        WechatOAuth::ffi()->wechat_oauth_decision_free($this->decision);
    }

    /** @internal */
    public function handle(): FFI\CData
    {
        return $this->decision;
    }

    public function kind(): int
    {
        $ffi = WechatOAuth::ffi();
        $kind = $ffi->new('wechat_oauth_decision_kind');
        WechatOAuth::check($ffi->wechat_oauth_decision_get_kind($this->decision, FFI::addr($kind)));
        return $kind->cdata;
    }

    /** The largest body a NEEDS_BODY decision's route takes, in bytes. */
    public function bodyLimit(): int
    {
        $ffi = WechatOAuth::ffi();
        $out = $ffi->new('size_t');
        WechatOAuth::check($ffi->wechat_oauth_decision_body_limit($this->decision, FFI::addr($out)));
        return (int) $out->cdata;
    }

    public function status(): int
    {
        $ffi = WechatOAuth::ffi();
        $status = $ffi->new('uint16_t');
        WechatOAuth::check($ffi->wechat_oauth_decision_status($this->decision, FFI::addr($status)));
        return $status->cdata;
    }

    /** @return list<array{0: string, 1: string}> */
    public function headers(): array
    {
        $ffi = WechatOAuth::ffi();
        $count = $ffi->new('size_t');
        WechatOAuth::check($ffi->wechat_oauth_decision_header_count($this->decision, FFI::addr($count)));
        $headers = [];
        $name = $ffi->new('wechat_oauth_str');
        $value = $ffi->new('wechat_oauth_str');
        for ($i = 0; $i < $count->cdata; $i++) {
            WechatOAuth::check($ffi->wechat_oauth_decision_header($this->decision, $i, FFI::addr($name), FFI::addr($value)));
            $headers[] = [WechatOAuth::copy($name), WechatOAuth::copy($value)];
        }
        return $headers;
    }

    public function body(): string
    {
        $ffi = WechatOAuth::ffi();
        $body = $ffi->new('wechat_oauth_str');
        WechatOAuth::check($ffi->wechat_oauth_decision_body($this->decision, FFI::addr($body)));
        return WechatOAuth::copy($body) ?? '';
    }

    /** WeChat's errcode behind this answer, 0 when none. */
    public function errcode(): int
    {
        $ffi = WechatOAuth::ffi();
        $errcode = $ffi->new('int64_t');
        WechatOAuth::check($ffi->wechat_oauth_decision_errcode($this->decision, FFI::addr($errcode)));
        return $errcode->cdata;
    }

    /** The verified identity of a passing request, or null. */
    public function identity(): ?array
    {
        $ffi = WechatOAuth::ffi();
        $id = $ffi->new('const wechat_oauth_identity *');
        if ($ffi->wechat_oauth_decision_identity($this->decision, FFI::addr($id)) !== 0) {
            return null;
        }
        return self::identityFields($id);
    }

    /** @internal */
    public static function identityFields(FFI\CData $id): array
    {
        $ffi = WechatOAuth::ffi();
        $value = $ffi->new('wechat_oauth_str');
        $fields = [];
        foreach (self::IDENTITY_FIELDS as $key => $field) {
            WechatOAuth::check($ffi->wechat_oauth_identity_get($id, $field, FFI::addr($value)));
            $fields[$key] = WechatOAuth::copy($value);
        }
        return $fields;
    }

    /** Sends this decision as the response (status, headers, body). */
    public function send(): void
    {
        http_response_code($this->status());
        foreach ($this->headers() as [$name, $value]) {
            header("$name: $value", false);
        }
        echo $this->body();
    }

    /** For a passing request: adds the headers the library asks for (a refreshed session cookie). */
    public function sendPassHeaders(): void
    {
        foreach ($this->headers() as [$name, $value]) {
            header("$name: $value", false);
        }
    }
}
