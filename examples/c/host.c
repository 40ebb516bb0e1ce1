/*
 * A small C web host protected by WeChat login through libwechat_oauth.
 *
 *   WECHAT_OAUTH_CONFIG=config.toml PORT=8081 ./wechat-oauth-c-host
 *
 * Serves `/` as a protected page showing the openid and nickname, and the
 * library's routes under the configured prefix (callback, login, logout,
 * userinfo) exactly as the gateway does: every decision comes from the
 * library. Plain POSIX sockets, one request per connection, one at a time.
 */
#define _POSIX_C_SOURCE 200809L

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wechat_oauth.h"

#define MAX_REQUEST (64 * 1024)

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) {
  (void)sig;
  stopping = 1;
}

/* The value of the first header `name` in the request head, or NULL. */
static const char *header(char *head, const char *name, size_t *len) {
  size_t n = strlen(name);
  for (char *line = strstr(head, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
    char *start = line + 2;
    if (strncasecmp(start, name, n) == 0 && start[n] == ':') {
      char *value = start + n + 1;
      while (*value == ' ' || *value == '\t') value++;
      char *end = strstr(value, "\r\n");
      *len = (size_t)(end - value);
      return value;
    }
  }
  *len = 0;
  return NULL;
}

/* Every Cookie header joined with "; " (caller frees), or NULL. */
static char *joined_cookies(char *head, size_t *out_len) {
  size_t total = 0;
  char *joined = NULL;
  for (char *line = strstr(head, "\r\n"); line && line[2] != '\r'; line = strstr(line + 2, "\r\n")) {
    char *start = line + 2;
    if (strncasecmp(start, "Cookie:", 7) != 0) continue;
    char *value = start + 7;
    while (*value == ' ' || *value == '\t') value++;
    size_t len = (size_t)(strstr(value, "\r\n") - value);
    char *grown = realloc(joined, total + len + 3);
    if (!grown) break;
    joined = grown;
    if (total) {
      memcpy(joined + total, "; ", 2);
      total += 2;
    }
    memcpy(joined + total, value, len);
    total += len;
    joined[total] = '\0';
  }
  *out_len = total;
  return joined;
}

static wechat_oauth_str str_of(const char *data, size_t len) {
  wechat_oauth_str s = {data, len};
  return s;
}

static const char *reason(unsigned status) {
  switch (status) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Status";
  }
}

static void write_all(int fd, const char *data, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, data, len);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;
    }
    data += n;
    len -= (size_t)n;
  }
}

/* Writes the decision's headers (all of them for RESPOND, the Set-Cookie
 * to add for PASS). */
static void write_decision_headers(int fd, const wechat_oauth_decision *d) {
  size_t count = 0;
  wechat_oauth_decision_header_count(d, &count);
  for (size_t i = 0; i < count; i++) {
    wechat_oauth_str name, value;
    if (wechat_oauth_decision_header(d, i, &name, &value) != WECHAT_OAUTH_RESULT_OK) continue;
    char line[8192];
    int n = snprintf(line, sizeof line, "%.*s: %.*s\r\n", (int)name.len, name.data, (int)value.len, value.data);
    if (n > 0 && (size_t)n < sizeof line) write_all(fd, line, (size_t)n);
  }
}

static void respond(int fd, const wechat_oauth_decision *d) {
  uint16_t status = 500;
  wechat_oauth_str body = {"", 0};
  wechat_oauth_decision_status(d, &status);
  wechat_oauth_decision_body(d, &body);
  char line[256];
  int n = snprintf(line, sizeof line, "HTTP/1.1 %u %s\r\nConnection: close\r\nContent-Length: %zu\r\n",
                   (unsigned)status, reason(status), body.len);
  write_all(fd, line, (size_t)n);
  write_decision_headers(fd, d);
  write_all(fd, "\r\n", 2);
  write_all(fd, body.data, body.len);
}

/* Appends `s` HTML-escaped to `out` (capacity `cap`, used `*used`). */
static void append_escaped(char *out, size_t cap, size_t *used, wechat_oauth_str s) {
  for (size_t i = 0; i < s.len && *used + 7 < cap; i++) {
    const char *rep = NULL;
    switch (s.data[i]) {
      case '<': rep = "&lt;"; break;
      case '>': rep = "&gt;"; break;
      case '&': rep = "&amp;"; break;
      case '"': rep = "&quot;"; break;
      case '\'': rep = "&#39;"; break;
    }
    if (rep) {
      size_t r = strlen(rep);
      memcpy(out + *used, rep, r);
      *used += r;
    } else {
      out[(*used)++] = s.data[i];
    }
  }
}

static void append(char *out, size_t cap, size_t *used, const char *text) {
  size_t n = strlen(text);
  if (*used + n >= cap) n = cap - *used - 1;
  memcpy(out + *used, text, n);
  *used += n;
}

/* The application's own pages: `/` shows who is logged in. */
static void serve_app(int fd, const char *path, const wechat_oauth_decision *d) {
  char body[16384];
  size_t used = 0;
  unsigned status = 200;
  const wechat_oauth_identity *id = NULL;
  if (strcmp(path, "/") != 0) {
    status = 404;
    append(body, sizeof body, &used, "<!doctype html><title>Not found</title><h1>Not found</h1>\n");
  } else if (wechat_oauth_decision_identity(d, &id) == WECHAT_OAUTH_RESULT_OK) {
    wechat_oauth_str openid = {NULL, 0}, nickname = {NULL, 0};
    wechat_oauth_identity_get(id, WECHAT_OAUTH_IDENTITY_FIELD_OPENID, &openid);
    wechat_oauth_identity_get(id, WECHAT_OAUTH_IDENTITY_FIELD_NICKNAME, &nickname);
    append(body, sizeof body, &used,
           "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><title>C host</title></head>"
           "<body><h1>C host</h1><p>openid: <code id=\"openid\">");
    append_escaped(body, sizeof body, &used, openid);
    append(body, sizeof body, &used, "</code></p><p>nickname: <b id=\"nickname\">");
    append_escaped(body, sizeof body, &used, nickname);
    append(body, sizeof body, &used, "</b></p><p><a href=\"/_wechat/logout\">log out</a></p></body></html>\n");
  } else {
    append(body, sizeof body, &used, "<!doctype html><title>Public</title><p>public page</p>\n");
  }
  char line[256];
  int n = snprintf(line, sizeof line,
                   "HTTP/1.1 %u %s\r\nConnection: close\r\nContent-Type: text/html; charset=utf-8\r\n"
                   "Content-Length: %zu\r\n",
                   status, reason(status), used);
  write_all(fd, line, (size_t)n);
  write_decision_headers(fd, d);
  write_all(fd, "\r\n", 2);
  write_all(fd, body, used);
}

static void simple(int fd, unsigned status) {
  char line[160];
  int n = snprintf(line, sizeof line, "HTTP/1.1 %u %s\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
                   status, reason(status));
  write_all(fd, line, (size_t)n);
}

/* The request body for a NEEDS_BODY decision: the `already` bytes read past
 * the head, then the rest up to Content-Length, at most limit + 1 bytes (the
 * library answers 413 for more). NULL when out of memory. */
static char *read_body(int fd, const char *after_head, size_t already, size_t content_length,
                       size_t limit, size_t *out_len) {
  size_t want = content_length < limit + 1 ? content_length : limit + 1;
  char *body = malloc(want + 1);
  if (!body) return NULL;
  size_t used = already < want ? already : want;
  memcpy(body, after_head, used);
  while (used < want) {
    ssize_t n = read(fd, body + used, want - used);
    if (n <= 0) break;
    used += (size_t)n;
  }
  *out_len = used;
  return body;
}

static void handle(int fd, const char *peer, const wechat_oauth_client *client) {
  char *head = malloc(MAX_REQUEST + 1);
  if (!head) return;
  size_t used = 0;
  while (used < MAX_REQUEST) {
    ssize_t n = read(fd, head + used, MAX_REQUEST - used);
    if (n <= 0) break;
    used += (size_t)n;
    head[used] = '\0';
    if (strstr(head, "\r\n\r\n")) break;
  }
  head[used] = '\0';
  char *head_end = strstr(head, "\r\n\r\n");
  if (!head_end) {
    simple(fd, used >= MAX_REQUEST ? 431 : 400);
    free(head);
    return;
  }
  const char *after_head = head_end + 4;
  size_t already = used - (size_t)(after_head - head);
  /* Request line: METHOD SP TARGET SP VERSION */
  char *sp1 = strchr(head, ' ');
  char *sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
  char *eol = strstr(head, "\r\n");
  if (!sp1 || !sp2 || sp2 > eol) {
    simple(fd, 400);
    free(head);
    return;
  }
  *sp1 = '\0';
  *sp2 = '\0';
  char *target = sp1 + 1;
  char *query = strchr(target, '?');
  if (query) *query++ = '\0';

  size_t ua_len, accept_len, xrw_len, lang_len, cookie_len, xff_len, ouri_len, omethod_len, clen_len;
  const char *xff = header(sp2 + 1, "X-Forwarded-For", &xff_len);
  const char *original_uri = header(sp2 + 1, "X-Original-URI", &ouri_len);
  const char *original_method = header(sp2 + 1, "X-Original-Method", &omethod_len);
  const char *content_length = header(sp2 + 1, "Content-Length", &clen_len);
  const char *ua = header(sp2 + 1, "User-Agent", &ua_len);
  const char *accept = header(sp2 + 1, "Accept", &accept_len);
  const char *xrw = header(sp2 + 1, "X-Requested-With", &xrw_len);
  const char *lang = header(sp2 + 1, "Accept-Language", &lang_len);
  size_t origin_len = 0, acrm_len = 0;
  const char *origin = header(sp2 + 1, "Origin", &origin_len);
  const char *acrm = header(sp2 + 1, "Access-Control-Request-Method", &acrm_len);
  char *cookie = joined_cookies(sp2 + 1, &cookie_len);

  wechat_oauth_request request = {
      .method = str_of(head, strlen(head)),
      .path = str_of(target, strlen(target)),
      .query = query ? str_of(query, strlen(query)) : str_of(NULL, 0),
      .cookie = str_of(cookie, cookie_len),
      .user_agent = str_of(ua, ua_len),
      .accept = str_of(accept, accept_len),
      .x_requested_with = str_of(xrw, xrw_len),
      .accept_language = str_of(lang, lang_len),
      .client_address = str_of(peer, strlen(peer)),
      .x_forwarded_for = str_of(xff, xff_len),
      .x_original_uri = str_of(original_uri, ouri_len),
      .x_original_method = str_of(original_method, omethod_len),
      .origin = str_of(origin, origin_len),
      .access_control_request_method = str_of(acrm, acrm_len),
  };
  wechat_oauth_decision *decision = NULL;
  wechat_oauth_result r = wechat_oauth_client_decide(client, &request, &decision);
  wechat_oauth_decision_kind first_kind = 0;
  if (r == WECHAT_OAUTH_RESULT_OK) wechat_oauth_decision_get_kind(decision, &first_kind);
  if (r == WECHAT_OAUTH_RESULT_OK && first_kind == WECHAT_OAUTH_DECISION_KIND_NEEDS_BODY) {
    /* A signed push or the SPA's code hand-off: the library reads the body. */
    size_t limit = 0, body_len = 0;
    wechat_oauth_decision_body_limit(decision, &limit);
    size_t declared = content_length ? (size_t)strtoull(content_length, NULL, 10) : 0;
    char *body = read_body(fd, after_head, already, declared, limit, &body_len);
    wechat_oauth_decision_free(decision);
    decision = NULL;
    r = body ? wechat_oauth_client_decide_with_body(client, &request, (const uint8_t *)body, body_len, &decision)
             : WECHAT_OAUTH_RESULT_INTERNAL;
    free(body);
  }
  if (r == WECHAT_OAUTH_RESULT_OK) r = wechat_oauth_client_complete(client, decision);
  if (r != WECHAT_OAUTH_RESULT_OK) {
    /* Invalid UTF-8 in the request, for example. */
    simple(fd, 400);
  } else {
    wechat_oauth_decision_kind kind = 0;
    wechat_oauth_decision_get_kind(decision, &kind);
    if (kind == WECHAT_OAUTH_DECISION_KIND_PASS) {
      serve_app(fd, target, decision);
    } else {
      respond(fd, decision);
    }
  }
  wechat_oauth_decision_free(decision);
  free(cookie);
  free(head);
}

int main(void) {
  const char *config = getenv("WECHAT_OAUTH_CONFIG");
  const char *port_text = getenv("PORT");
  const char *bind_host = getenv("HOST") ? getenv("HOST") : "127.0.0.1";
  if (!config || !port_text) {
    fprintf(stderr, "usage: WECHAT_OAUTH_CONFIG=config.toml PORT=8081 %s\n", "wechat-oauth-c-host");
    return 2;
  }
  const wechat_oauth_client *client = NULL;
  if (wechat_oauth_client_new_from_file(config, strlen(config), &client) != WECHAT_OAUTH_RESULT_OK) {
    char detail[1024];
    size_t n = 0;
    wechat_oauth_last_error(detail, sizeof detail, &n);
    fprintf(stderr, "wechat-oauth-c-host: %.*s\n", (int)n, detail);
    return 1;
  }

  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal; /* no SA_RESTART: accept() returns EINTR */
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_port = htons((uint16_t)atoi(port_text));
  inet_pton(AF_INET, bind_host, &addr.sin_addr);
  if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 64) != 0) {
    perror("wechat-oauth-c-host: bind");
    wechat_oauth_client_free(client);
    close(fd);
    return 1;
  }
  wechat_oauth_str version = wechat_oauth_version();
  printf("wechat-oauth-c-host %.*s listening on http://%s:%s\n", (int)version.len, version.data, bind_host,
         port_text);
  fflush(stdout);

  /* The library runs threads of its own, and a signal may land on one of them
     rather than interrupt accept(): wait in short steps and look at the flag. */
  struct pollfd listener = {.fd = fd, .events = POLLIN};
  while (!stopping) {
    if (poll(&listener, 1, 200) <= 0) continue;
    struct sockaddr_storage addr;
    socklen_t addr_len = sizeof addr;
    int conn = accept(fd, (struct sockaddr *)&addr, &addr_len);
    if (conn < 0) continue;
    /* The peer's address, for the library's per-client limits. */
    char peer[INET6_ADDRSTRLEN] = "";
    if (addr.ss_family == AF_INET)
      inet_ntop(AF_INET, &((struct sockaddr_in *)&addr)->sin_addr, peer, sizeof peer);
    else if (addr.ss_family == AF_INET6)
      inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&addr)->sin6_addr, peer, sizeof peer);
    handle(conn, peer, client);
    close(conn);
  }
  close(fd);
  wechat_oauth_client_free(client);
  printf("wechat-oauth-c-host stopped\n");
  return 0;
}
