/*
 * ngx_http_wechat_oauth_module: WeChat login in nginx's access phase,
 * through libwechat_oauth (the same decisions as wechat-gateway).
 *
 *   load_module modules/ngx_http_wechat_oauth_module.so;
 *   wechat_oauth_config /etc/nginx/wechat.toml;     # http, server, location
 *   wechat_oauth_config /etc/nginx/sites.toml shop; # the file's [[site]] "shop"
 *   wechat_oauth on;                                # http, server, location
 *   wechat_oauth_policy admins;                     # http, server, location
 *   proxy_set_header X-WeChat-OpenID $wechat_openid;
 *
 * Every request is decided by wechat_oauth_client_decide(), which does no
 * IO: it passes (identity in $wechat_openid, $wechat_unionid, $wechat_scope,
 * $wechat_nickname, $wechat_user; a WeCom member's in $wecom_userid,
 * $wecom_openid, $wecom_corpid, $wecom_name, $wecom_department), or answers (a redirect to WeChat, the 401 JSON, a page,
 * the library's routes under the prefix).
 *
 * The one blocking step, a callback's code exchange with WeChat, never runs
 * on the worker's event loop: it is posted to nginx's thread pool
 * ("default", or the one named by wechat_oauth_thread_pool) with
 * ngx_thread_task_post(); the request waits (blocked, like aio threads)
 * and resumes its phases when the task's completion event fires.
 *
 * wechat_oauth_policy NAME gives every request of its block the policy
 * called NAME (public, login, userinfo, followers, or a [[route]]'s name in
 * the config file) instead of the route its path falls under; an unknown
 * name stops `nginx -t` with the names there are.
 *
 * Client-sent X-WeChat-* and X-WeCom-* request headers are removed before any upstream
 * sees them. A broken config file stops `nginx -t` with the library's
 * message.
 */
#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>
#include <ngx_thread_pool.h>

#include "wechat_oauth.h"

#if !(NGX_THREADS)
#error "ngx_http_wechat_oauth_module needs nginx built --with-threads"
#endif

typedef struct {
    const wechat_oauth_client *client;
    ngx_str_t config_path;
} ngx_http_wechat_oauth_client_t;

typedef struct {
    ngx_flag_t enable;
    ngx_http_wechat_oauth_client_t *client;
    ngx_str_t policy;                     /* wechat_oauth_policy; empty: by path */
    const wechat_oauth_client *decider;   /* client, or one derived with policy */
    ngx_str_t thread_pool_name;
    ngx_thread_pool_t *thread_pool;
} ngx_http_wechat_oauth_loc_conf_t;

enum { WECHAT_NEW = 0, WECHAT_IO_RUNNING, WECHAT_IO_DONE, WECHAT_BODY_READING, WECHAT_BODY_READ };

typedef struct {
    wechat_oauth_decision *decision;
    ngx_uint_t state;
    ngx_uint_t passed;
    ngx_uint_t waiting_body; /* the access phase returned NGX_DONE until the body is read */
    ngx_str_t fields[10]; /* the variables of field_names (FIELD_COUNT), by index */
} ngx_http_wechat_oauth_ctx_t;

typedef struct {
    const wechat_oauth_client *client;
    wechat_oauth_decision *decision;
    wechat_oauth_result result;
    ngx_http_request_t *request;
} ngx_http_wechat_oauth_task_t;

static ngx_int_t ngx_http_wechat_oauth_preconf(ngx_conf_t *cf);
static ngx_int_t ngx_http_wechat_oauth_init(ngx_conf_t *cf);
static void *ngx_http_wechat_oauth_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_wechat_oauth_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child);
static char *ngx_http_wechat_oauth_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf);

static ngx_command_t ngx_http_wechat_oauth_commands[] = {
    {ngx_string("wechat_oauth"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_FLAG,
     ngx_conf_set_flag_slot, NGX_HTTP_LOC_CONF_OFFSET,
     offsetof(ngx_http_wechat_oauth_loc_conf_t, enable), NULL},
    {ngx_string("wechat_oauth_config"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE12,
     ngx_http_wechat_oauth_config, NGX_HTTP_LOC_CONF_OFFSET, 0, NULL},
    {ngx_string("wechat_oauth_policy"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET,
     offsetof(ngx_http_wechat_oauth_loc_conf_t, policy), NULL},
    {ngx_string("wechat_oauth_thread_pool"),
     NGX_HTTP_MAIN_CONF | NGX_HTTP_SRV_CONF | NGX_HTTP_LOC_CONF | NGX_CONF_TAKE1,
     ngx_conf_set_str_slot, NGX_HTTP_LOC_CONF_OFFSET,
     offsetof(ngx_http_wechat_oauth_loc_conf_t, thread_pool_name), NULL},
    ngx_null_command};

static ngx_http_module_t ngx_http_wechat_oauth_module_ctx = {
    ngx_http_wechat_oauth_preconf,         /* preconfiguration */
    ngx_http_wechat_oauth_init,            /* postconfiguration */
    NULL, NULL,                            /* main conf */
    NULL, NULL,                            /* server conf */
    ngx_http_wechat_oauth_create_loc_conf, /* create location configuration */
    ngx_http_wechat_oauth_merge_loc_conf   /* merge location configuration */
};

ngx_module_t ngx_http_wechat_oauth_module = {
    NGX_MODULE_V1,
    &ngx_http_wechat_oauth_module_ctx, /* module context */
    ngx_http_wechat_oauth_commands,    /* module directives */
    NGX_HTTP_MODULE,                   /* module type */
    NULL, NULL, NULL, NULL, NULL, NULL, NULL,
    NGX_MODULE_V1_PADDING};

#define FIELD_COUNT 10
/* The variables, and the identity header each one holds. */
static const char *field_names[FIELD_COUNT] = {"wechat_openid",  "wechat_unionid",   "wechat_scope",
                                               "wechat_nickname", "wechat_user",     "wecom_userid",
                                               "wecom_openid",   "wecom_corpid",     "wecom_name",
                                               "wecom_department"};
static const ngx_str_t field_headers[FIELD_COUNT] = {
    ngx_string("X-WeChat-OpenID"),   ngx_string("X-WeChat-UnionID"), ngx_string("X-WeChat-Scope"),
    ngx_string("X-WeChat-Nickname"), ngx_string("X-WeChat-User"),    ngx_string("X-WeCom-UserID"),
    ngx_string("X-WeCom-OpenID"),    ngx_string("X-WeCom-CorpID"),   ngx_string("X-WeCom-Name"),
    ngx_string("X-WeCom-Department")};

/* ---- configuration ---- */

static void ngx_http_wechat_oauth_free_client(void *data) {
    ngx_http_wechat_oauth_client_t *c = data;
    wechat_oauth_client_free(c->client);
    c->client = NULL;
}

static void ngx_http_wechat_oauth_free_decider(void *data) {
    wechat_oauth_client_free(data);
}

/* The client that decides this block's requests: the config file's, or one
 * derived from it with the block's policy (reused from the parent block when
 * both are the same). */
static char *ngx_http_wechat_oauth_decider(ngx_conf_t *cf, ngx_http_wechat_oauth_loc_conf_t *prev,
                                           ngx_http_wechat_oauth_loc_conf_t *conf) {
    if (conf->client == NULL) return NGX_CONF_OK;
    if (conf->policy.len == 0) {
        conf->decider = conf->client->client;
        return NGX_CONF_OK;
    }
    if (prev->decider != NULL && prev->client == conf->client && prev->policy.len == conf->policy.len &&
        ngx_strncmp(prev->policy.data, conf->policy.data, conf->policy.len) == 0) {
        conf->decider = prev->decider;
        return NGX_CONF_OK;
    }
    if (wechat_oauth_client_with_policy(conf->client->client, (const char *)conf->policy.data, conf->policy.len,
                                        &conf->decider) != WECHAT_OAUTH_RESULT_OK) {
        u_char detail[1024];
        size_t n = 0;
        wechat_oauth_last_error((char *)detail, sizeof detail, &n);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "wechat_oauth_policy \"%V\" (%V): %*s", &conf->policy,
                           &conf->client->config_path, n, detail);
        return NGX_CONF_ERROR;
    }
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        wechat_oauth_client_free(conf->decider);
        conf->decider = NULL;
        return NGX_CONF_ERROR;
    }
    cln->handler = ngx_http_wechat_oauth_free_decider;
    cln->data = (void *)conf->decider;
    return NGX_CONF_OK;
}

static void *ngx_http_wechat_oauth_create_loc_conf(ngx_conf_t *cf) {
    ngx_http_wechat_oauth_loc_conf_t *conf = ngx_pcalloc(cf->pool, sizeof(*conf));
    if (conf == NULL) return NULL;
    conf->enable = NGX_CONF_UNSET;
    conf->client = NGX_CONF_UNSET_PTR;
    return conf;
}

static char *ngx_http_wechat_oauth_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child) {
    ngx_http_wechat_oauth_loc_conf_t *prev = parent, *conf = child;
    ngx_conf_merge_value(conf->enable, prev->enable, 0);
    ngx_conf_merge_ptr_value(conf->client, prev->client, NULL);
    ngx_conf_merge_str_value(conf->policy, prev->policy, "");
    if (ngx_http_wechat_oauth_decider(cf, prev, conf) != NGX_CONF_OK) return NGX_CONF_ERROR;
    ngx_conf_merge_str_value(conf->thread_pool_name, prev->thread_pool_name, "default");
    if (conf->enable && conf->client == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "\"wechat_oauth on\" needs \"wechat_oauth_config\"");
        return NGX_CONF_ERROR;
    }
    if (conf->enable) {
        conf->thread_pool = ngx_thread_pool_add(cf, &conf->thread_pool_name);
        if (conf->thread_pool == NULL) return NGX_CONF_ERROR;
    }
    return NGX_CONF_OK;
}

/* wechat_oauth_config FILE [SITE]: loads it (its [[site]] SITE) now, so
 * that `nginx -t` reports its errors. */
static char *ngx_http_wechat_oauth_config(ngx_conf_t *cf, ngx_command_t *cmd, void *conf) {
    ngx_http_wechat_oauth_loc_conf_t *lcf = conf;
    ngx_str_t *value = cf->args->elts;
    (void)cmd;
    if (lcf->client != NGX_CONF_UNSET_PTR) return "is duplicate";
    ngx_str_t path = value[1];
    if (ngx_conf_full_name(cf->cycle, &path, 1) != NGX_OK) return NGX_CONF_ERROR;

    ngx_http_wechat_oauth_client_t *c = ngx_pcalloc(cf->pool, sizeof(*c));
    if (c == NULL) return NGX_CONF_ERROR;
    c->config_path = path;
    wechat_oauth_result loaded =
        cf->args->nelts == 3
            ? wechat_oauth_client_new_for_site((const char *)path.data, path.len, (const char *)value[2].data,
                                               value[2].len, &c->client)
            : wechat_oauth_client_new_from_file((const char *)path.data, path.len, &c->client);
    if (loaded != WECHAT_OAUTH_RESULT_OK) {
        u_char detail[1024];
        size_t n = 0;
        wechat_oauth_last_error((char *)detail, sizeof detail, &n);
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0, "wechat_oauth_config \"%V\": %*s", &path, n, detail);
        return NGX_CONF_ERROR;
    }
    ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(cf->pool, 0);
    if (cln == NULL) {
        wechat_oauth_client_free(c->client);
        return NGX_CONF_ERROR;
    }
    cln->handler = ngx_http_wechat_oauth_free_client;
    cln->data = c;
    lcf->client = c;
    return NGX_CONF_OK;
}

/* ---- variables ---- */

static ngx_int_t ngx_http_wechat_oauth_variable(ngx_http_request_t *r, ngx_http_variable_value_t *v,
                                                uintptr_t data) {
    ngx_http_wechat_oauth_ctx_t *ctx = ngx_http_get_module_ctx(r->main, ngx_http_wechat_oauth_module);
    if (ctx == NULL || !ctx->passed || ctx->fields[data].len == 0) {
        v->not_found = 1;
        return NGX_OK;
    }
    v->data = ctx->fields[data].data;
    v->len = ctx->fields[data].len;
    v->valid = 1;
    v->no_cacheable = 0;
    v->not_found = 0;
    return NGX_OK;
}

static ngx_int_t ngx_http_wechat_oauth_preconf(ngx_conf_t *cf) {
    for (uintptr_t i = 0; i < FIELD_COUNT; i++) {
        ngx_str_t name = {ngx_strlen(field_names[i]), (u_char *)field_names[i]};
        ngx_http_variable_t *var = ngx_http_add_variable(cf, &name, NGX_HTTP_VAR_NOCACHEABLE);
        if (var == NULL) return NGX_ERROR;
        var->get_handler = ngx_http_wechat_oauth_variable;
        var->data = i;
    }
    return NGX_OK;
}

/* ---- the request ---- */

static wechat_oauth_str str_of(ngx_str_t *s) {
    wechat_oauth_str out = {(const char *)s->data, s->len};
    return out;
}

static wechat_oauth_str header_value(ngx_http_request_t *r, const char *name) {
    size_t n = ngx_strlen(name);
    ngx_list_part_t *part = &r->headers_in.headers.part;
    ngx_table_elt_t *h = part->elts;
    for (ngx_uint_t i = 0;; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) break;
            part = part->next;
            h = part->elts;
            i = 0;
        }
        if (h[i].key.len == n && ngx_strncasecmp(h[i].key.data, (u_char *)name, n) == 0) return str_of(&h[i].value);
    }
    wechat_oauth_str none = {NULL, 0};
    return none;
}

/* Every Cookie header joined with "; ". */
static wechat_oauth_str cookie_header(ngx_http_request_t *r) {
    wechat_oauth_str none = {NULL, 0};
    size_t len = 0, count = 0;
#if (nginx_version >= 1023000)
    for (ngx_table_elt_t *h = r->headers_in.cookie; h; h = h->next) {
        len += h->value.len + 2;
        count++;
    }
#else
    ngx_table_elt_t **cookies = r->headers_in.cookies.elts;
    for (ngx_uint_t i = 0; i < r->headers_in.cookies.nelts; i++) {
        len += cookies[i]->value.len + 2;
        count++;
    }
#endif
    if (count == 0) return none;
    u_char *buf = ngx_pnalloc(r->pool, len), *p = buf;
    if (buf == NULL) return none;
#if (nginx_version >= 1023000)
    for (ngx_table_elt_t *h = r->headers_in.cookie; h; h = h->next) {
        if (p != buf) p = ngx_cpymem(p, "; ", 2);
        p = ngx_cpymem(p, h->value.data, h->value.len);
    }
#else
    for (ngx_uint_t i = 0; i < r->headers_in.cookies.nelts; i++) {
        if (p != buf) p = ngx_cpymem(p, "; ", 2);
        p = ngx_cpymem(p, cookies[i]->value.data, cookies[i]->value.len);
    }
#endif
    wechat_oauth_str out = {(const char *)buf, (size_t)(p - buf)};
    return out;
}

/* Rebuilds the request headers an upstream sees: every client-sent X-WeChat-*
 * header removed (in any case, `_` for `-`) (only this module says who the user is), and the Cookie
 * header without the gate's own cookies (`cookie`; NULL data: none left). */
static ngx_int_t clean_upstream_headers(ngx_http_request_t *r, wechat_oauth_str cookie) {
    ngx_list_t kept;
    if (ngx_list_init(&kept, r->pool, 20, sizeof(ngx_table_elt_t)) != NGX_OK) return NGX_ERROR;
    ngx_uint_t removed = 0;
    ngx_table_elt_t *first_cookie = NULL;
    ngx_list_part_t *part = &r->headers_in.headers.part;
    ngx_table_elt_t *h = part->elts;
    for (ngx_uint_t i = 0;; i++) {
        if (i >= part->nelts) {
            if (part->next == NULL) break;
            part = part->next;
            h = part->elts;
            i = 0;
        }
        /* Every spelling: X_WeChat_OpenID reaches CGI/PHP as HTTP_X_WECHAT_OPENID. */
        bool identity = false;
        wechat_oauth_str key = {(const char *)h[i].key.data, h[i].key.len};
        if (wechat_oauth_is_identity_header(key, &identity) != WECHAT_OAUTH_RESULT_OK || identity) {
            removed++;
            continue;
        }
        if (h[i].key.len == 6 && ngx_strncasecmp(h[i].key.data, (u_char *)"cookie", 6) == 0) {
            removed++;
            if (first_cookie == NULL) first_cookie = &h[i];
            continue;
        }
        ngx_table_elt_t *copy = ngx_list_push(&kept);
        if (copy == NULL) return NGX_ERROR;
        *copy = h[i];
    }
    if (first_cookie && cookie.data) {
        ngx_table_elt_t *c = ngx_list_push(&kept);
        if (c == NULL) return NGX_ERROR;
        *c = *first_cookie;
#if (nginx_version >= 1023000)
        c->next = NULL;
#endif
        c->value.data = ngx_pnalloc(r->pool, cookie.len + 1);
        if (c->value.data == NULL) return NGX_ERROR;
        ngx_memcpy(c->value.data, cookie.data, cookie.len);
        c->value.data[cookie.len] = '\0';
        c->value.len = cookie.len;
    }
    if (removed) r->headers_in.headers = kept;
    return NGX_OK;
}

static ngx_int_t push_header(ngx_http_request_t *r, wechat_oauth_str name, wechat_oauth_str value) {
    ngx_table_elt_t *h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) return NGX_ERROR;
    h->hash = 1;
#if (nginx_version >= 1023000)
    h->next = NULL;
#endif
    h->key.len = name.len;
    h->key.data = ngx_pnalloc(r->pool, name.len);
    h->value.len = value.len;
    h->value.data = ngx_pnalloc(r->pool, value.len + 1);
    if (h->key.data == NULL || h->value.data == NULL) return NGX_ERROR;
    ngx_memcpy(h->key.data, name.data, name.len);
    ngx_memcpy(h->value.data, value.data, value.len);
    h->value.data[value.len] = '\0';
    return NGX_OK;
}

/* Headers the library asks to add (all of a RESPOND, a refreshed Set-Cookie for PASS). */
static ngx_int_t add_decision_headers(ngx_http_request_t *r, const wechat_oauth_decision *d) {
    size_t count = 0;
    if (wechat_oauth_decision_header_count(d, &count) != WECHAT_OAUTH_RESULT_OK) return NGX_ERROR;
    for (size_t i = 0; i < count; i++) {
        wechat_oauth_str name, value;
        if (wechat_oauth_decision_header(d, i, &name, &value) != WECHAT_OAUTH_RESULT_OK) return NGX_ERROR;
        if (name.len == 12 && ngx_strncasecmp((u_char *)name.data, (u_char *)"Content-Type", 12) == 0) {
            r->headers_out.content_type.data = ngx_pnalloc(r->pool, value.len);
            if (r->headers_out.content_type.data == NULL) return NGX_ERROR;
            ngx_memcpy(r->headers_out.content_type.data, value.data, value.len);
            r->headers_out.content_type.len = value.len;
            r->headers_out.content_type_len = value.len;
            continue;
        }
        if (push_header(r, name, value) != NGX_OK) return NGX_ERROR;
    }
    return NGX_OK;
}

/* Writes a RESPOND decision as the answer and finalizes the request. */
static ngx_int_t respond(ngx_http_request_t *r, const wechat_oauth_decision *d) {
    uint16_t status = 500;
    wechat_oauth_str body = {"", 0};
    if (wechat_oauth_decision_status(d, &status) != WECHAT_OAUTH_RESULT_OK ||
        wechat_oauth_decision_body(d, &body) != WECHAT_OAUTH_RESULT_OK || add_decision_headers(r, d) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    ngx_http_discard_request_body(r);
    r->headers_out.status = status;
    r->headers_out.content_length_n = (off_t)body.len;
    if (body.len == 0 || r->method == NGX_HTTP_HEAD) r->header_only = 1;
    ngx_int_t rc = ngx_http_send_header(r);
    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        ngx_http_finalize_request(r, rc);
        return NGX_DONE;
    }
    ngx_buf_t *b = ngx_create_temp_buf(r->pool, body.len);
    if (b == NULL) {
        ngx_http_finalize_request(r, NGX_ERROR);
        return NGX_DONE;
    }
    b->last = ngx_cpymem(b->pos, body.data, body.len);
    b->last_buf = (r == r->main);
    b->last_in_chain = 1;
    ngx_chain_t out = {b, NULL};
    ngx_http_finalize_request(r, ngx_http_output_filter(r, &out));
    return NGX_DONE;
}

/* A PASS: keep the identity for the variables, drop spoofed headers. */
static ngx_int_t pass(ngx_http_request_t *r, ngx_http_wechat_oauth_ctx_t *ctx) {
    const wechat_oauth_identity *id = NULL;
    if (wechat_oauth_decision_identity(ctx->decision, &id) == WECHAT_OAUTH_RESULT_OK) {
        /* Each variable is the value of its identity header, exactly as the
         * gateway sends it (nickname and name percent-encoded UTF-8); a WeCom
         * login has no X-WeChat-* header, a WeChat login no X-WeCom-* one. */
        size_t count = 0;
        wechat_oauth_identity_header_count(id, &count);
        for (size_t i = 0; i < count; i++) {
            wechat_oauth_str name, value;
            if (wechat_oauth_identity_header(id, i, &name, &value) != WECHAT_OAUTH_RESULT_OK) continue;
            /* The library names each header exactly as field_headers spells it. */
            for (int slot = 0; slot < FIELD_COUNT; slot++) {
                const ngx_str_t *header = &field_headers[slot];
                if (name.len != header->len || ngx_memcmp(name.data, header->data, header->len) != 0) continue;
                /* Borrowed, not copied: the decision holds the identity until
                 * the request's pool is destroyed, after its log phase. */
                ctx->fields[slot].data = (u_char *)value.data;
                ctx->fields[slot].len = value.len;
                break;
            }
        }
    }
    ctx->passed = 1;
    wechat_oauth_str cookie = {NULL, 0};
    if (wechat_oauth_decision_upstream_cookie(ctx->decision, &cookie) != WECHAT_OAUTH_RESULT_OK) return NGX_ERROR;
    if (clean_upstream_headers(r, cookie) != NGX_OK || add_decision_headers(r, ctx->decision) != NGX_OK) {
        return NGX_ERROR;
    }
    return NGX_DECLINED;
}

/* One decision handle kept per worker for the next request: deciding into
 * it (wechat_oauth_client_decide_into) lets a passing request with a known
 * session make no allocation in the library. Handlers and pool cleanups run
 * on the worker's one thread. */
static wechat_oauth_decision *spare_decision;

static void free_decision(void *data) {
    ngx_http_wechat_oauth_ctx_t *ctx = data;
    if (spare_decision == NULL) {
        spare_decision = ctx->decision;
    } else {
        wechat_oauth_decision_free(ctx->decision);
    }
    ctx->decision = NULL;
}

/* Decides `req` into the spare handle when there is one, else a new one. */
static wechat_oauth_result decide(const wechat_oauth_client *client, const wechat_oauth_request *req,
                                  wechat_oauth_decision **out) {
    if (spare_decision == NULL) return wechat_oauth_client_decide(client, req, out);
    *out = spare_decision;
    spare_decision = NULL;
    return wechat_oauth_client_decide_into(client, req, *out);
}

/* Runs in a thread of the pool: the blocking code exchange. */
static void io_thread(void *data, ngx_log_t *log) {
    ngx_http_wechat_oauth_task_t *t = data;
    (void)log;
    t->result = wechat_oauth_client_complete(t->client, t->decision);
}

/* Back on the event loop: resume the request's phases. */
static void io_done(ngx_event_t *ev) {
    ngx_http_wechat_oauth_task_t *t = ev->data;
    ngx_http_request_t *r = t->request;
    ngx_connection_t *c = r->connection;
    ngx_http_set_log_request(c->log, r);
    ngx_http_wechat_oauth_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_wechat_oauth_module);
    r->main->blocked--;
    r->aio = 0;
    if (t->result != WECHAT_OAUTH_RESULT_OK) {
        ngx_log_error(NGX_LOG_ERR, c->log, 0, "wechat_oauth: code exchange failed with result %ui",
                      (ngx_uint_t)t->result);
    }
    ctx->state = WECHAT_IO_DONE;
    r->write_event_handler(r);
    ngx_http_run_posted_requests(c);
}

static ngx_int_t post_io(ngx_http_request_t *r, ngx_http_wechat_oauth_loc_conf_t *conf,
                         ngx_http_wechat_oauth_ctx_t *ctx) {
    ngx_thread_task_t *task = ngx_thread_task_alloc(r->pool, sizeof(ngx_http_wechat_oauth_task_t));
    if (task == NULL) return NGX_ERROR;
    ngx_http_wechat_oauth_task_t *t = task->ctx;
    t->client = conf->decider;
    t->decision = ctx->decision;
    t->request = r;
    t->result = WECHAT_OAUTH_RESULT_OK;
    task->handler = io_thread;
    task->event.data = t;
    task->event.handler = io_done;
    if (ngx_thread_task_post(conf->thread_pool, task) != NGX_OK) return NGX_ERROR;
    r->main->blocked++;
    r->aio = 1;
    ctx->state = WECHAT_IO_RUNNING;
    return NGX_AGAIN;
}

/* The library's view of a request (strings borrowed from it). */
static wechat_oauth_request request_of(ngx_http_request_t *r) {
    ngx_str_t path = r->uri, query = r->args;
    /* The raw path, as the browser sent it (r->uri is decoded). */
    if (r->unparsed_uri.len) {
        u_char *q = ngx_strlchr(r->unparsed_uri.data, r->unparsed_uri.data + r->unparsed_uri.len, '?');
        path.data = r->unparsed_uri.data;
        path.len = q ? (size_t)(q - r->unparsed_uri.data) : r->unparsed_uri.len;
    }
    wechat_oauth_request req = {
        .method = str_of(&r->method_name),
        .path = str_of(&path),
        .query = r->args.len || (r->unparsed_uri.len && ngx_strlchr(r->unparsed_uri.data,
                                                                     r->unparsed_uri.data + r->unparsed_uri.len, '?'))
                     ? str_of(&query)
                     : (wechat_oauth_str){NULL, 0},
        .cookie = cookie_header(r),
        .user_agent = r->headers_in.user_agent ? str_of(&r->headers_in.user_agent->value)
                                               : (wechat_oauth_str){NULL, 0},
        .accept = header_value(r, "Accept"),
        .x_requested_with = header_value(r, "X-Requested-With"),
        .accept_language = header_value(r, "Accept-Language"),
        .client_address = str_of(&r->connection->addr_text),
        .x_forwarded_for = header_value(r, "X-Forwarded-For"),
        .x_original_uri = header_value(r, "X-Original-URI"),
        .x_original_method = header_value(r, "X-Original-Method"),
        .origin = header_value(r, "Origin"),
        .access_control_request_method = header_value(r, "Access-Control-Request-Method"),
    };
    return req;
}

/* The body nginx read (memory or temporary file), at most `limit` bytes
 * plus one, copied into the request's pool; NULL on error. */
static u_char *body_bytes(ngx_http_request_t *r, size_t limit, size_t *len) {
    *len = 0;
    u_char *out = ngx_pnalloc(r->pool, limit + 1);
    if (out == NULL) return NULL;
    if (r->request_body == NULL) return out;
    for (ngx_chain_t *cl = r->request_body->bufs; cl && *len <= limit; cl = cl->next) {
        ngx_buf_t *b = cl->buf;
        size_t room = limit + 1 - *len;
        if (ngx_buf_in_memory(b)) {
            size_t n = (size_t)(b->last - b->pos);
            n = n < room ? n : room;
            ngx_memcpy(out + *len, b->pos, n);
            *len += n;
        } else if (b->in_file) {
            size_t n = (size_t)(b->file_last - b->file_pos);
            n = n < room ? n : room;
            ssize_t got = ngx_read_file(b->file, out + *len, n, b->file_pos);
            if (got < 0) return NULL;
            *len += (size_t)got;
        }
    }
    return out;
}

/* nginx read the body: decide again with it and go on with the phases. */
static void body_read(ngx_http_request_t *r) {
    ngx_http_wechat_oauth_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_wechat_oauth_module);
    ngx_uint_t waiting = ctx->state == WECHAT_BODY_READING && ctx->waiting_body;
    ctx->state = WECHAT_BODY_READ;
    ctx->waiting_body = 0;
    r->main->count--;
    if (waiting) ngx_http_core_run_phases(r);
}

static ngx_int_t ngx_http_wechat_oauth_handler(ngx_http_request_t *r) {
    ngx_http_wechat_oauth_loc_conf_t *conf = ngx_http_get_module_loc_conf(r, ngx_http_wechat_oauth_module);
    if (!conf->enable || conf->client == NULL || r != r->main || r->internal) return NGX_DECLINED;

    ngx_http_wechat_oauth_ctx_t *ctx = ngx_http_get_module_ctx(r, ngx_http_wechat_oauth_module);
    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->pool, sizeof(*ctx));
        ngx_pool_cleanup_t *cln = ngx_pool_cleanup_add(r->pool, 0);
        if (ctx == NULL || cln == NULL) return NGX_HTTP_INTERNAL_SERVER_ERROR;
        cln->handler = free_decision;
        cln->data = ctx;
        ngx_http_set_ctx(r, ctx, ngx_http_wechat_oauth_module);

        wechat_oauth_request req = request_of(r);
        if (decide(conf->decider, &req, &ctx->decision) != WECHAT_OAUTH_RESULT_OK) {
            /* Not UTF-8, for example: the client's mistake. */
            return NGX_HTTP_BAD_REQUEST;
        }
    }
    if (ctx->passed) return NGX_DECLINED;
    if (ctx->state == WECHAT_IO_RUNNING) return NGX_AGAIN;

    wechat_oauth_decision_kind kind = 0;
    if (wechat_oauth_decision_get_kind(ctx->decision, &kind) != WECHAT_OAUTH_RESULT_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    if (kind == WECHAT_OAUTH_DECISION_KIND_NEEDS_BODY) {
        if (ctx->state == WECHAT_NEW) {
            /* A signed push or the SPA's code hand-off: nginx reads the body. */
            ctx->state = WECHAT_BODY_READING;
            ngx_int_t rc = ngx_http_read_client_request_body(r, body_read);
            if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) return rc;
            if (ctx->state == WECHAT_BODY_READING) {
                ctx->waiting_body = 1;
                return NGX_DONE;
            }
        }
        if (ctx->state != WECHAT_BODY_READ) return NGX_HTTP_INTERNAL_SERVER_ERROR;
        size_t limit = 0, len = 0;
        if (wechat_oauth_decision_body_limit(ctx->decision, &limit) != WECHAT_OAUTH_RESULT_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
        u_char *body = body_bytes(r, limit, &len);
        if (body == NULL) return NGX_HTTP_INTERNAL_SERVER_ERROR;
        wechat_oauth_request req = request_of(r);
        wechat_oauth_decision_free(ctx->decision);
        ctx->decision = NULL;
        if (wechat_oauth_client_decide_with_body(conf->decider, &req, body, len, &ctx->decision) !=
            WECHAT_OAUTH_RESULT_OK) {
            return NGX_HTTP_BAD_REQUEST;
        }
        ctx->state = WECHAT_NEW;
        if (wechat_oauth_decision_get_kind(ctx->decision, &kind) != WECHAT_OAUTH_RESULT_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }
    switch (kind) {
        case WECHAT_OAUTH_DECISION_KIND_PASS:
            return pass(r, ctx) == NGX_ERROR ? NGX_HTTP_INTERNAL_SERVER_ERROR : NGX_DECLINED;
        case WECHAT_OAUTH_DECISION_KIND_NEEDS_IO:
            if (ctx->state == WECHAT_NEW) {
                return post_io(r, conf, ctx) == NGX_ERROR ? NGX_HTTP_INTERNAL_SERVER_ERROR : NGX_AGAIN;
            }
            return NGX_HTTP_INTERNAL_SERVER_ERROR; /* the IO ran and left it undecided */
        default:
            return respond(r, ctx->decision);
    }
}

static ngx_int_t ngx_http_wechat_oauth_init(ngx_conf_t *cf) {
    ngx_http_core_main_conf_t *cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);
    ngx_http_handler_pt *h = ngx_array_push(&cmcf->phases[NGX_HTTP_ACCESS_PHASE].handlers);
    if (h == NULL) return NGX_ERROR;
    *h = ngx_http_wechat_oauth_handler;
    return NGX_OK;
}
