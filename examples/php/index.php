<?php
// Router script for PHP's built-in server: see ./serve.
declare(strict_types=1);

require_once __DIR__ . '/WechatController.php';

$config = getenv('WECHAT_OAUTH_CONFIG');
if ($config === false || $config === '') {
    http_response_code(500);
    echo "WECHAT_OAUTH_CONFIG is not set\n";
    return;
}
try {
    $oauth = WechatOAuth::shared($config);
} catch (WechatOAuthException $e) {
    error_log('wechat_oauth: ' . $e->getMessage());
    http_response_code(500);
    echo "configuration error (see the server log)\n";
    return;
}
(new WechatController($oauth))->dispatch($_SERVER);
