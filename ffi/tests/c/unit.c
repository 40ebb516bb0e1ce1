/*
 * C unit test of every exported function of libwechat_oauth, including NULL
 * and invalid-UTF-8 arguments. Run by the test suite plain, under
 * AddressSanitizer/UBSan and under valgrind.
 *
 * WECHAT_TEST_SESSION: a session cookie value sealed with COOKIE_SECRET
 * below (the test suite makes it), to exercise the identity functions.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wechat_oauth.h"

static int passed = 0, failed = 0;

#define CHECK(cond)                                                  \
  do {                                                               \
    if (cond) {                                                      \
      passed++;                                                      \
    } else {                                                         \
      failed++;                                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                \
  } while (0)

#define OK WECHAT_OAUTH_RESULT_OK
#define COOKIE_SECRET "c-unit-test-cookie-secret-0123456789abcdef"

static const char *CONFIG =
    "[wechat]\n"
    "appid = \"wx1234567890abcdef\"\n"
    "secret = \"unit-test-app-secret\"\n"
    "scope = \"snsapi_userinfo\"\n"
    "open_base = \"https://open.example\"\n"
    "api_base = \"http://127.0.0.1:9\"\n"
    "timeout_ms = 500\n"
    "retries = 0\n"
    "[gateway]\n"
    "public_url = \"https://app.example.com\"\n"
    "cookie_secret = \"" COOKIE_SECRET "\"\n"
    "public_paths = [\"/static/\"]\n";

static wechat_oauth_str s(const char *text) {
  wechat_oauth_str out = {text, text ? strlen(text) : 0};
  return out;
}

static int str_eq(wechat_oauth_str a, const char *b) {
  return a.data && a.len == strlen(b) && memcmp(a.data, b, a.len) == 0;
}

static int str_contains(wechat_oauth_str a, const char *needle) {
  size_t n = strlen(needle);
  if (!a.data || a.len < n) return 0;
  for (size_t i = 0; i + n <= a.len; i++)
    if (memcmp(a.data + i, needle, n) == 0) return 1;
  return 0;
}

static wechat_oauth_request request(const char *method, const char *path, const char *query,
                                    const char *cookie, const char *ua, const char *accept) {
  wechat_oauth_request r;
  memset(&r, 0, sizeof r);
  r.method = s(method);
  r.path = s(path);
  r.query = s(query);
  r.cookie = s(cookie);
  r.user_agent = s(ua);
  r.accept = s(accept);
  return r;
}

/* Finds header `name` (starting with `prefix` if given) in a decision. */
static int find_header(const wechat_oauth_decision *d, const char *name, const char *prefix,
                       wechat_oauth_str *value) {
  size_t count = 0;
  if (wechat_oauth_decision_header_count(d, &count) != OK) return 0;
  for (size_t i = 0; i < count; i++) {
    wechat_oauth_str n, v;
    if (wechat_oauth_decision_header(d, i, &n, &v) != OK) return 0;
    if (str_eq(n, name) && (!prefix || (v.len >= strlen(prefix) && memcmp(v.data, prefix, strlen(prefix)) == 0))) {
      *value = v;
      return 1;
    }
  }
  return 0;
}

static void test_messages(void) {
  wechat_oauth_str v = wechat_oauth_version();
  CHECK(v.data && v.len > 0);

  char buf[256];
  size_t written = 0;
  const uint32_t codes[] = {0, 1000, 1001, 1002, 1003, 1004, 2000, 2001, 3000, 3001, 4000, 9000, 9001};
  for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
    CHECK(wechat_oauth_result_message(codes[i], buf, sizeof buf, &written) == OK);
    CHECK(written > 0 && written < sizeof buf);
  }
  CHECK(wechat_oauth_result_message(12345, buf, sizeof buf, &written) == WECHAT_OAUTH_RESULT_INVALID_ARGUMENT);
  CHECK(wechat_oauth_result_message(1000, buf, 3, &written) == WECHAT_OAUTH_RESULT_INSUFFICIENT_SIZE);
  CHECK(written > 3);
  CHECK(wechat_oauth_result_message(1000, buf, sizeof buf, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_result_message(1000, NULL, 10, &written) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_last_error(buf, sizeof buf, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
}

static void test_client_creation(void) {
  const wechat_oauth_client *client = (const wechat_oauth_client *)0x1;
  char detail[512];
  size_t n = 0;

  CHECK(wechat_oauth_client_new_from_toml(NULL, 10, &client) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_new_from_toml(CONFIG, strlen(CONFIG), NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_new_from_toml("\xff\xfe", 2, &client) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
  const char *short_secret = "[wechat]\nappid=\"wx1\"\nsecret=\"x\"\n[gateway]\npublic_url=\"https://a.example\"\ncookie_secret=\"short\"\n";
  CHECK(wechat_oauth_client_new_from_toml(short_secret, strlen(short_secret), &client) ==
        WECHAT_OAUTH_RESULT_CONFIG_INVALID);
  CHECK(wechat_oauth_last_error(detail, sizeof detail, &n) == OK);
  CHECK(n > 0 && strstr(detail, "[gateway] cookie_secret") != NULL);
  CHECK(memmem(detail, n, "short", 5) == NULL);
  CHECK(client == (const wechat_oauth_client *)0x1); /* untouched on failure */
  CHECK(wechat_oauth_client_new_from_file("/nonexistent/config.toml", 24, &client) ==
        WECHAT_OAUTH_RESULT_CONFIG_UNREADABLE);
  CHECK(wechat_oauth_client_new_from_file(NULL, 0, &client) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_new_from_file("\xc3", 1, &client) == WECHAT_OAUTH_RESULT_INVALID_UTF8);

  /* The process-wide client for a file: the same one every time. */
  char path[] = "/tmp/wechat-oauth-unit-XXXXXX";
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  if (fd >= 0) {
    FILE *f = fdopen(fd, "w");
    fputs(CONFIG, f);
    fclose(f);
    const wechat_oauth_client *a = NULL, *b = NULL;
    CHECK(wechat_oauth_client_shared_from_file(path, strlen(path), &a) == OK && a != NULL);
    CHECK(wechat_oauth_client_shared_from_file(path, strlen(path), &b) == OK && b == a);
    wechat_oauth_client_free(a);
    wechat_oauth_client_free(b);
    /* A site named in a file without [[site]] tables. */
    const wechat_oauth_client *site = (const wechat_oauth_client *)0x1;
    CHECK(wechat_oauth_client_new_for_site(path, strlen(path), "shop", 4, &site) ==
          WECHAT_OAUTH_RESULT_CONFIG_INVALID);
    CHECK(wechat_oauth_last_error(detail, sizeof detail, &n) == OK && strstr(detail, "no [[site]] tables") != NULL);
    CHECK(site == (const wechat_oauth_client *)0x1);
    remove(path);
  }
  CHECK(wechat_oauth_client_new_for_site(NULL, 0, "shop", 4, &client) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_new_for_site("/x.toml", 7, NULL, 4, &client) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_new_for_site("/x.toml", 7, "\xff", 1, &client) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
  CHECK(wechat_oauth_client_new_for_site("/nonexistent/x.toml", 19, "shop", 4, &client) ==
        WECHAT_OAUTH_RESULT_CONFIG_UNREADABLE);
  CHECK(wechat_oauth_client_shared_from_file(NULL, 0, &client) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_shared_from_file("\xff", 1, &client) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
  CHECK(wechat_oauth_client_shared_from_file("/nonexistent/x.toml", 19, &client) ==
        WECHAT_OAUTH_RESULT_CONFIG_UNREADABLE);

  wechat_oauth_client_free(NULL);
  wechat_oauth_decision_free(NULL);
  wechat_oauth_identity_free(NULL);
}

static void test_decisions(const wechat_oauth_client *client) {
  wechat_oauth_decision *d = NULL;
  wechat_oauth_decision_kind kind = 0;
  uint16_t status = 0;
  wechat_oauth_str value, body;
  int64_t errcode = -1;

  wechat_oauth_str prefix;
  CHECK(wechat_oauth_client_prefix(client, &prefix) == OK && str_eq(prefix, "/_wechat"));
  CHECK(wechat_oauth_client_prefix(NULL, &prefix) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);

  /* NULL and bad arguments. */
  wechat_oauth_request r = request("GET", "/orders", "id=1", NULL, "MicroMessenger/8.0", "text/html");
  CHECK(wechat_oauth_client_decide(NULL, &r, &d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_decide(client, NULL, &d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_decide(client, &r, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  wechat_oauth_request no_path = request("GET", NULL, NULL, NULL, NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &no_path, &d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  wechat_oauth_request bad = request("GET", "/", NULL, "a=\xff\xfe", NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &bad, &d) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
  CHECK(d == NULL);

  /* A WeChat browser without a session: 302 to authorize with a state cookie. */
  CHECK(wechat_oauth_client_decide(client, &r, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_RESPOND);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 302);
  CHECK(find_header(d, "Location", "https://open.example/connect/oauth2/authorize?appid=wx1234567890abcdef&", &value));
  CHECK(str_contains(value, "#wechat_redirect"));
  wechat_oauth_str state_cookie;
  CHECK(find_header(d, "Set-Cookie", "wechat_state_", &state_cookie));
  CHECK(str_contains(state_cookie, "HttpOnly") && str_contains(state_cookie, "Secure"));
  /* Keep "wechat_state_<state>=<value>" and the state for a callback. */
  char cookie[4096] = {0}, callback_query[256] = {0};
  size_t cookie_len = 0;
  while (cookie_len < state_cookie.len && state_cookie.data[cookie_len] != ';') cookie_len++;
  memcpy(cookie, state_cookie.data, cookie_len);
  char *state = cookie + strlen("wechat_state_");
  char *eq = strchr(state, '=');
  snprintf(callback_query, sizeof callback_query, "code=THE_CODE&state=%.*s", (int)(eq - state), state);

  CHECK(wechat_oauth_decision_errcode(d, &errcode) == OK && errcode == 0);
  CHECK(wechat_oauth_decision_header(d, 999, &value, &value) == WECHAT_OAUTH_RESULT_INVALID_ARGUMENT);
  CHECK(wechat_oauth_decision_header(d, 0, NULL, &value) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_decision_body(d, &body) == OK);
  const wechat_oauth_identity *borrowed = NULL;
  CHECK(wechat_oauth_decision_identity(d, &borrowed) == WECHAT_OAUTH_RESULT_NO_SESSION && borrowed == NULL);
  CHECK(wechat_oauth_decision_upstream_cookie(d, &value) == WECHAT_OAUTH_RESULT_WRONG_STATE);
  CHECK(wechat_oauth_client_complete(client, d) == OK); /* not NEEDS_IO: unchanged */
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_RESPOND);
  CHECK(wechat_oauth_decision_get_kind(NULL, &kind) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_decision_status(d, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  wechat_oauth_decision_free(d);

  /* A body route: the SPA's code hand-off needs its body, at most 4 KiB. */
  wechat_oauth_request post = request("POST", "/_wechat/exchange", NULL, NULL, NULL, "application/json");
  CHECK(wechat_oauth_client_decide(client, &post, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_NEEDS_BODY);
  size_t limit = 0;
  CHECK(wechat_oauth_decision_body_limit(d, &limit) == OK && limit == 4096);
  CHECK(wechat_oauth_decision_body_limit(d, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_decision_status(d, &status) == WECHAT_OAUTH_RESULT_WRONG_STATE);
  CHECK(wechat_oauth_client_complete(client, d) == OK); /* nothing to do yet */
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_NEEDS_BODY);
  wechat_oauth_decision_free(d);
  const char *json = "{\"code\": \"c\", \"state\": \"not-a-state\"}";
  CHECK(wechat_oauth_client_decide_with_body(NULL, &post, (const uint8_t *)json, strlen(json), &d) ==
        WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_decide_with_body(client, &post, NULL, 3, &d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_decide_with_body(client, &post, (const uint8_t *)json, strlen(json), NULL) ==
        WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_decide_with_body(client, &post, (const uint8_t *)json, strlen(json), &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 400); /* no such state cookie */
  CHECK(wechat_oauth_decision_body(d, &body) == OK && str_contains(body, "\"invalid_request\""));
  wechat_oauth_decision_free(d);
  CHECK(wechat_oauth_client_decide_with_body(client, &post, NULL, 0, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 400); /* an empty body */
  wechat_oauth_decision_free(d);
  char *big = malloc(5000);
  if (big) {
    memset(big, ' ', 5000);
    CHECK(wechat_oauth_client_decide_with_body(client, &post, (const uint8_t *)big, 5000, &d) == OK);
    CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 413);
    wechat_oauth_decision_free(d);
    free(big);
  }
  /* Any other request is decided as without a body. */
  CHECK(wechat_oauth_client_decide_with_body(client, &r, NULL, 0, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 302);
  wechat_oauth_decision_free(d);

  /* A script: 401 JSON with the login URL. */
  wechat_oauth_request xhr = request("GET", "/api", NULL, NULL, NULL, "application/json");
  CHECK(wechat_oauth_client_decide(client, &xhr, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 401);
  CHECK(wechat_oauth_decision_body(d, &body) == OK && str_contains(body, "\"login_required\""));
  CHECK(find_header(d, "Content-Type", "application/json", &value));
  wechat_oauth_decision_free(d);

  /* A public path passes without identity and without the gate's cookies. */
  wechat_oauth_request pub = request("GET", "/static/a.css", NULL, "theme=dark; wechat_session=zzz", NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &pub, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_PASS);
  CHECK(wechat_oauth_decision_upstream_cookie(d, &value) == OK && str_eq(value, "theme=dark"));
  CHECK(wechat_oauth_decision_status(d, &status) == WECHAT_OAUTH_RESULT_WRONG_STATE);
  CHECK(wechat_oauth_decision_body(d, &body) == WECHAT_OAUTH_RESULT_WRONG_STATE);
  size_t count = 99;
  CHECK(wechat_oauth_decision_header_count(d, &count) == OK && count == 0);
  CHECK(wechat_oauth_decision_identity(d, &borrowed) == WECHAT_OAUTH_RESULT_NO_SESSION);
  wechat_oauth_decision_free(d);

  /* Dot segments: the canonical path decides, and the host gets it. */
  wechat_oauth_request dots = request("GET", "/static/%2e%2e/orders", NULL, NULL, NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &dots, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind != WECHAT_OAUTH_DECISION_KIND_PASS);
  wechat_oauth_decision_free(d);
  wechat_oauth_request slash = request("GET", "/static/..%2forders", NULL, NULL, NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &slash, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 400);
  wechat_oauth_decision_free(d);
  wechat_oauth_request walk = request("GET", "/x/../static/%61.css", NULL, NULL, NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &walk, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_PASS);
  CHECK(wechat_oauth_decision_upstream_path(d, &value) == OK && str_eq(value, "/static/a.css"));
  wechat_oauth_decision_free(d);
  CHECK(wechat_oauth_client_decide(client, &pub, &d) == OK);
  CHECK(wechat_oauth_decision_upstream_path(d, &value) == OK && value.data == NULL);
  wechat_oauth_decision_free(d);

  /* Identity header names in every spelling. */
  const char *owned_names[] = {"X-WeChat-OpenID", "x_wechat_unionid", "X_WECHAT-Scope", "x-wechat-"};
  const char *other_names[] = {"X-WeChat", "X-WeChatOpenID", "Cookie", "x wechat openid"};
  for (size_t i = 0; i < 4; i++) {
    bool is = false;
    wechat_oauth_str n1 = {owned_names[i], strlen(owned_names[i])};
    CHECK(wechat_oauth_is_identity_header(n1, &is) == OK && is);
    wechat_oauth_str n2 = {other_names[i], strlen(other_names[i])};
    CHECK(wechat_oauth_is_identity_header(n2, &is) == OK && !is);
  }
  wechat_oauth_str no_name = {NULL, 0};
  bool is = true;
  CHECK(wechat_oauth_is_identity_header(no_name, &is) == OK && !is);
  CHECK(wechat_oauth_is_identity_header(no_name, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);

  /* A callback with a wrong state: 400, no IO. */
  wechat_oauth_request wrong = request("GET", "/_wechat/callback", "code=C&state=Wrong1", NULL, NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &wrong, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 400);
  wechat_oauth_decision_free(d);

  /* The right callback needs IO; WeChat is unreachable here: a 503 page. */
  wechat_oauth_request cb = request("GET", "/_wechat/callback", callback_query, cookie, NULL, NULL);
  CHECK(wechat_oauth_client_decide(client, &cb, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_NEEDS_IO);
  CHECK(wechat_oauth_decision_status(d, &status) == WECHAT_OAUTH_RESULT_WRONG_STATE);
  CHECK(wechat_oauth_decision_header_count(d, &count) == OK && count == 0);
  CHECK(wechat_oauth_client_complete(NULL, d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_complete(client, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_complete(client, d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_RESPOND);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 503);
  CHECK(wechat_oauth_decision_body(d, &body) == OK && !str_contains(body, "THE_CODE"));
  CHECK(find_header(d, "Set-Cookie", "wechat_state_", &value) && str_contains(value, "Max-Age=0"));
  wechat_oauth_decision_free(d);

  /* Login for a return path; anything off-site returns to "/". */
  CHECK(wechat_oauth_client_login(client, "/orders?id=7", 12, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 302);
  CHECK(find_header(d, "Location", "https://open.example/connect/oauth2/authorize?", &value));
  wechat_oauth_decision_free(d);
  CHECK(wechat_oauth_client_login(client, NULL, 0, &d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_login(client, "\xff", 1, &d) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
  CHECK(wechat_oauth_client_login(NULL, "/", 1, &d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);

  /* Logout without a session: remove the cookie, go to "/". */
  CHECK(wechat_oauth_client_logout(client, "", 0, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 302);
  CHECK(find_header(d, "Location", "/", &value) && str_eq(value, "/"));
  CHECK(find_header(d, "Set-Cookie", "__Host-wechat_session=;", &value));
  wechat_oauth_decision_free(d);
  CHECK(wechat_oauth_client_logout(client, NULL, 0, &d) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_logout(client, "\xfe", 1, &d) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
}

static void test_identity(const wechat_oauth_client *client, const char *session) {
  wechat_oauth_identity *owned = (wechat_oauth_identity *)0x1;
  CHECK(wechat_oauth_client_session_identity(client, "a=b", 3, &owned) == WECHAT_OAUTH_RESULT_NO_SESSION);
  CHECK(owned == (wechat_oauth_identity *)0x1);
  CHECK(wechat_oauth_client_session_identity(client, "\xff", 1, &owned) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
  CHECK(wechat_oauth_client_session_identity(client, NULL, 0, &owned) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_session_identity(NULL, "a", 1, &owned) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  if (!session) {
    fprintf(stderr, "WECHAT_TEST_SESSION not set: identity functions not tested\n");
    failed++;
    return;
  }
  char cookie[4096];
  int n = snprintf(cookie, sizeof cookie, "other=1; __Host-wechat_session=%s", session);
  CHECK(n > 0 && (size_t)n < sizeof cookie);
  CHECK(wechat_oauth_client_session_identity(client, cookie, (size_t)n, &owned) == OK);
  wechat_oauth_str v;
  CHECK(wechat_oauth_identity_get(owned, WECHAT_OAUTH_IDENTITY_FIELD_OPENID, &v) == OK && str_eq(v, "oUnitTestOpenid"));
  CHECK(wechat_oauth_identity_get(owned, WECHAT_OAUTH_IDENTITY_FIELD_UNIONID, &v) == OK && v.data == NULL && v.len == 0);
  CHECK(wechat_oauth_identity_get(owned, WECHAT_OAUTH_IDENTITY_FIELD_SCOPE, &v) == OK && str_eq(v, "snsapi_userinfo"));
  CHECK(wechat_oauth_identity_get(owned, WECHAT_OAUTH_IDENTITY_FIELD_NICKNAME, &v) == OK && str_eq(v, "测试 🐼"));
  CHECK(wechat_oauth_identity_get(owned, WECHAT_OAUTH_IDENTITY_FIELD_HEADIMGURL, &v) == OK && v.data == NULL);
  /* No unionid: the user key is the openid. */
  CHECK(wechat_oauth_identity_get(owned, WECHAT_OAUTH_IDENTITY_FIELD_USER, &v) == OK && str_eq(v, "oUnitTestOpenid"));
  CHECK(wechat_oauth_identity_get(owned, 99, &v) == WECHAT_OAUTH_RESULT_INVALID_ARGUMENT);
  CHECK(wechat_oauth_identity_get(NULL, 1, &v) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  size_t count = 0;
  CHECK(wechat_oauth_identity_header_count(owned, &count) == OK && count == 4);
  wechat_oauth_str name, value;
  int saw_nickname = 0, saw_user = 0;
  for (size_t i = 0; i < count; i++) {
    CHECK(wechat_oauth_identity_header(owned, i, &name, &value) == OK);
    if (str_eq(name, "X-WeChat-Nickname")) saw_nickname = str_eq(value, "%E6%B5%8B%E8%AF%95%20%F0%9F%90%BC");
    if (str_eq(name, "X-WeChat-User")) saw_user = str_eq(value, "oUnitTestOpenid");
  }
  CHECK(saw_nickname && saw_user);
  CHECK(wechat_oauth_identity_header(owned, count, &name, &value) == WECHAT_OAUTH_RESULT_INVALID_ARGUMENT);
  CHECK(wechat_oauth_identity_header_count(NULL, &count) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  wechat_oauth_identity_free(owned);

  /* The same session passes a protected page with its identity, borrowed. */
  wechat_oauth_request r = request("GET", "/orders", NULL, cookie, NULL, NULL);
  wechat_oauth_decision *d = NULL;
  CHECK(wechat_oauth_client_decide(client, &r, &d) == OK);
  wechat_oauth_decision_kind kind = 0;
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_PASS);
  const wechat_oauth_identity *borrowed = NULL;
  CHECK(wechat_oauth_decision_identity(d, &borrowed) == OK && borrowed != NULL);
  CHECK(wechat_oauth_identity_get(borrowed, WECHAT_OAUTH_IDENTITY_FIELD_OPENID, &v) == OK && str_eq(v, "oUnitTestOpenid"));
  CHECK(wechat_oauth_decision_upstream_cookie(d, &v) == OK && str_eq(v, "other=1"));
  wechat_oauth_decision_free(d);

  /* Logout with it: the tokens go (none here), the cookie is removed. */
  CHECK(wechat_oauth_client_logout(client, cookie, (size_t)n, &d) == OK);
  uint16_t status = 0;
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 302);
  wechat_oauth_decision_free(d);
}

/* The status of one callback (a call WeChat pays for) from `peer`, via `xff`. */
static uint16_t callback_status(const wechat_oauth_client *client, const char *peer, const char *xff) {
  wechat_oauth_request r = request("GET", "/_wechat/callback", "code=c&state=s", NULL, NULL, NULL);
  r.client_address = s(peer);
  r.x_forwarded_for = s(xff);
  wechat_oauth_decision *d = NULL;
  uint16_t status = 0;
  if (wechat_oauth_client_decide(client, &r, &d) != OK) return 0;
  wechat_oauth_decision_status(d, &status);
  if (status == 429) {
    wechat_oauth_str retry;
    CHECK(find_header(d, "Retry-After", NULL, &retry));
  }
  wechat_oauth_decision_free(d);
  return status;
}

/* [limits] apply per client address, which follows trusted_proxies. */
static void test_client_limits(void) {
  char config[2048];
  snprintf(config, sizeof config, "%s%s", CONFIG,
           "trusted_proxies = [\"10.0.0.0/8\"]\n[limits]\nlogins_per_minute = 1\nlogin_burst = 1\n");
  const wechat_oauth_client *client = NULL;
  CHECK(wechat_oauth_client_new_from_toml(config, strlen(config), &client) == OK);
  if (!client) return;
  CHECK(callback_status(client, "203.0.113.7", NULL) == 400);
  CHECK(callback_status(client, "203.0.113.7", NULL) == 429);
  CHECK(callback_status(client, "203.0.113.8", NULL) == 400);
  CHECK(callback_status(client, "::ffff:203.0.113.8", NULL) == 429); /* the same IPv4 client */
  /* Behind a trusted front, the forwarded client counts, not the front. */
  CHECK(callback_status(client, "10.1.2.3", "203.0.113.7") == 429);
  CHECK(callback_status(client, "10.1.2.3", "198.51.100.1, 10.9.9.9") == 400);
  CHECK(callback_status(client, "10.1.2.3", "198.51.100.1") == 429);
  /* From anyone else a forwarded address is ignored. */
  CHECK(callback_status(client, "192.0.2.1", "198.51.100.2") == 400);
  CHECK(callback_status(client, "192.0.2.1", "198.51.100.3") == 429);
  /* No address, or not an address: no per-client limit. */
  CHECK(callback_status(client, NULL, NULL) == 400);
  CHECK(callback_status(client, NULL, NULL) == 400);
  CHECK(callback_status(client, "not-an-ip", NULL) == 400);
  CHECK(callback_status(client, "not-an-ip", NULL) == 400);
  wechat_oauth_client_free(client);
}

/* A client with a policy of its own decides every path by it. */
static void test_policy(const wechat_oauth_client *client) {
  const wechat_oauth_client *open = NULL, *strict = NULL, *again = NULL;
  const wechat_oauth_client *untouched = (const wechat_oauth_client *)0x1;
  wechat_oauth_decision *d = NULL;
  wechat_oauth_decision_kind kind = 0;
  uint16_t status = 0;
  char detail[512];
  size_t n = 0;

  CHECK(wechat_oauth_client_with_policy(NULL, "public", 6, &open) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_with_policy(client, NULL, 6, &open) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_with_policy(client, "public", 6, NULL) == WECHAT_OAUTH_RESULT_NULL_PARAMETER);
  CHECK(wechat_oauth_client_with_policy(client, "\xff", 1, &untouched) == WECHAT_OAUTH_RESULT_INVALID_UTF8);
  CHECK(wechat_oauth_client_with_policy(client, "admins", 6, &untouched) == WECHAT_OAUTH_RESULT_CONFIG_INVALID);
  CHECK(wechat_oauth_last_error(detail, sizeof detail, &n) == OK);
  CHECK(strstr(detail, "\"admins\"") != NULL && strstr(detail, "public, login, userinfo, followers") != NULL);
  CHECK(wechat_oauth_client_with_policy(client, "Public", 6, &untouched) == WECHAT_OAUTH_RESULT_CONFIG_INVALID);
  CHECK(untouched == (const wechat_oauth_client *)0x1);

  CHECK(wechat_oauth_client_with_policy(client, "public", 6, &open) == OK && open != NULL);
  CHECK(wechat_oauth_client_with_policy(open, "login", 5, &strict) == OK && strict != NULL);
  CHECK(wechat_oauth_client_with_policy(strict, "public", 6, &again) == OK && again != NULL);
  wechat_oauth_request orders = request("GET", "/orders", NULL, NULL, "MicroMessenger/8.0", "text/html");
  wechat_oauth_request css = request("GET", "/static/a.css", NULL, NULL, "MicroMessenger/8.0", "text/css");
  /* By path: /orders needs a login, /static/ is public. */
  CHECK(wechat_oauth_client_decide(client, &orders, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 302);
  wechat_oauth_decision_free(d);
  /* "public": /orders passes without a session. */
  CHECK(wechat_oauth_client_decide(open, &orders, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_PASS);
  wechat_oauth_decision_free(d);
  CHECK(wechat_oauth_client_decide(again, &orders, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_PASS);
  wechat_oauth_decision_free(d);
  /* "login": the public path needs one. */
  CHECK(wechat_oauth_client_decide(strict, &css, &d) == OK);
  CHECK(wechat_oauth_decision_status(d, &status) == OK && status == 302);
  wechat_oauth_decision_free(d);
  wechat_oauth_client_free(open);
  wechat_oauth_client_free(strict);
  wechat_oauth_client_free(again);
  /* The client it came from is as it was. */
  CHECK(wechat_oauth_client_decide(client, &css, &d) == OK);
  CHECK(wechat_oauth_decision_get_kind(d, &kind) == OK && kind == WECHAT_OAUTH_DECISION_KIND_PASS);
  wechat_oauth_decision_free(d);
}

int main(void) {
  test_messages();
  test_client_limits();
  test_client_creation();
  const wechat_oauth_client *client = NULL;
  wechat_oauth_result r = wechat_oauth_client_new_from_toml(CONFIG, strlen(CONFIG), &client);
  CHECK(r == OK && client != NULL);
  if (client) {
    test_policy(client);
    test_decisions(client);
    test_identity(client, getenv("WECHAT_TEST_SESSION"));
    wechat_oauth_client_free(client);
  }
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
