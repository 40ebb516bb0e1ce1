<?php
/**
 * The seed's Yii-style controller (start login, callback, user in session),
 * with every decision taken by libwechat_oauth: no URL building, no state
 * check, no token call and no TLS setting in PHP.
 */
declare(strict_types=1);

require_once __DIR__ . '/WechatOAuth.php';

final class WechatController
{
    public function __construct(private WechatOAuth $oauth, private string $prefix = '/_wechat')
    {
    }

    /** Routes a request of PHP's built-in server. */
    public function dispatch(array $server): void
    {
        $path = strtok($server['REQUEST_URI'] ?? '/', '?') ?: '/';
        try {
            if ($path === '/wx/login') {
                $this->actionWxThirds($_GET['rd'] ?? '/');
                return;
            }
            $decision = $this->oauth->decideServer($server);
            if ($decision->kind() === WechatDecision::NEEDS_IO) {
                $this->actionRedirect($decision);
                return;
            }
            if ($decision->kind() === WechatDecision::RESPOND) {
                $decision->send();
                return;
            }
            $decision->sendPassHeaders();
            $this->actionIndex($path, $decision->identity());
        } catch (WechatOAuthException $e) {
            // A request the library can't read (e.g. invalid UTF-8): the client's mistake.
            http_response_code($e->result < 2000 ? 400 : 500);
            header('Content-Type: text/plain; charset=utf-8');
            echo $e->result < 2000 ? "bad request\n" : "server error\n";
            error_log('wechat_oauth: ' . $e->getMessage());
        }
    }

    /** Start login: a redirect to WeChat's authorize page (seed: actionWxThirds). */
    public function actionWxThirds(string $returnPath): void
    {
        $this->oauth->login($returnPath)->send();
    }

    /** The callback (seed: actionRedirect): the library exchanges the code once and sets the session. */
    public function actionRedirect(WechatDecision $decision): void
    {
        $this->oauth->complete($decision);
        $decision->send();
    }

    /** The protected page. */
    public function actionIndex(string $path, ?array $user): void
    {
        header('Content-Type: text/html; charset=utf-8');
        if ($path !== '/') {
            http_response_code(404);
            echo "<!doctype html><title>Not found</title><h1>Not found</h1>\n";
            return;
        }
        $e = fn (?string $s): string => htmlspecialchars($s ?? '', ENT_QUOTES, 'UTF-8');
        echo '<!doctype html><html lang="zh-CN"><head><meta charset="utf-8"><title>PHP host</title></head><body>',
            '<h1>PHP host</h1><p>openid: <code id="openid">', $e($user['openid'] ?? null), '</code></p>',
            '<p>nickname: <b id="nickname">', $e($user['nickname'] ?? null), '</b></p>',
            '<p><a href="', $e($this->prefix), '/logout">log out</a></p></body></html>', "\n";
    }
}
