enum wechat_oauth_result
 {
  WECHAT_OAUTH_RESULT_OK = 0,
  WECHAT_OAUTH_RESULT_NULL_PARAMETER = 1000,
  WECHAT_OAUTH_RESULT_INVALID_UTF8 = 1001,
  WECHAT_OAUTH_RESULT_INSUFFICIENT_SIZE = 1002,
  WECHAT_OAUTH_RESULT_INVALID_ARGUMENT = 1003,
  WECHAT_OAUTH_RESULT_WRONG_STATE = 1004,
  WECHAT_OAUTH_RESULT_CONFIG_INVALID = 2000,
  WECHAT_OAUTH_RESULT_CONFIG_UNREADABLE = 2001,
  WECHAT_OAUTH_RESULT_WECHAT_ERRCODE = 3000,
  WECHAT_OAUTH_RESULT_WECHAT_UNREACHABLE = 3001,
  WECHAT_OAUTH_RESULT_NO_SESSION = 4000,
  WECHAT_OAUTH_RESULT_PANIC = 9000,
  WECHAT_OAUTH_RESULT_INTERNAL = 9001,
};
typedef uint32_t wechat_oauth_result;

enum wechat_oauth_decision_kind
 {
  WECHAT_OAUTH_DECISION_KIND_PASS = 1,
  WECHAT_OAUTH_DECISION_KIND_RESPOND = 2,
  WECHAT_OAUTH_DECISION_KIND_NEEDS_IO = 3,
  WECHAT_OAUTH_DECISION_KIND_NEEDS_BODY = 4,
};
typedef uint32_t wechat_oauth_decision_kind;

enum wechat_oauth_identity_field
 {
  WECHAT_OAUTH_IDENTITY_FIELD_OPENID = 1,
  WECHAT_OAUTH_IDENTITY_FIELD_UNIONID = 2,
  WECHAT_OAUTH_IDENTITY_FIELD_SCOPE = 3,
  WECHAT_OAUTH_IDENTITY_FIELD_NICKNAME = 4,
  WECHAT_OAUTH_IDENTITY_FIELD_HEADIMGURL = 5,
  WECHAT_OAUTH_IDENTITY_FIELD_USER = 6,
  WECHAT_OAUTH_IDENTITY_FIELD_WECOM_USERID = 7,
  WECHAT_OAUTH_IDENTITY_FIELD_WECOM_CORPID = 8,
  WECHAT_OAUTH_IDENTITY_FIELD_WECOM_NAME = 9,
  WECHAT_OAUTH_IDENTITY_FIELD_WECOM_DEPARTMENT = 10,
};
typedef uint32_t wechat_oauth_identity_field;

typedef struct wechat_oauth_client wechat_oauth_client;

typedef struct wechat_oauth_decision wechat_oauth_decision;

typedef struct wechat_oauth_identity wechat_oauth_identity;

typedef struct wechat_oauth_str {
  const char *data;
  size_t len;
} wechat_oauth_str;

typedef struct wechat_oauth_request {
  struct wechat_oauth_str method;
  struct wechat_oauth_str path;
  struct wechat_oauth_str query;
  struct wechat_oauth_str cookie;
  struct wechat_oauth_str user_agent;
  struct wechat_oauth_str accept;
  struct wechat_oauth_str x_requested_with;
  struct wechat_oauth_str accept_language;
  struct wechat_oauth_str client_address;
  struct wechat_oauth_str x_forwarded_for;
  struct wechat_oauth_str x_original_uri;
  struct wechat_oauth_str x_original_method;
  struct wechat_oauth_str origin;
  struct wechat_oauth_str access_control_request_method;
} wechat_oauth_request;

struct wechat_oauth_str wechat_oauth_version(void);

wechat_oauth_result wechat_oauth_client_new_from_toml(const char *toml,
                                                      size_t toml_len,
                                                      const struct wechat_oauth_client **out);

wechat_oauth_result wechat_oauth_client_new_from_file(const char *path,
                                                      size_t path_len,
                                                      const struct wechat_oauth_client **out);

wechat_oauth_result wechat_oauth_client_new_for_site(const char *path,
                                                     size_t path_len,
                                                     const char *site,
                                                     size_t site_len,
                                                     const struct wechat_oauth_client **out);

wechat_oauth_result wechat_oauth_client_shared_from_file(const char *path,
                                                         size_t path_len,
                                                         const struct wechat_oauth_client **out);

void wechat_oauth_client_free(const struct wechat_oauth_client *client);

wechat_oauth_result wechat_oauth_client_with_policy(const struct wechat_oauth_client *client,
                                                    const char *name,
                                                    size_t name_len,
                                                    const struct wechat_oauth_client **out);

wechat_oauth_result wechat_oauth_client_prefix(const struct wechat_oauth_client *client,
                                               struct wechat_oauth_str *out);

wechat_oauth_result wechat_oauth_client_decide(const struct wechat_oauth_client *client,
                                               const struct wechat_oauth_request *request,
                                               struct wechat_oauth_decision **out);

wechat_oauth_result wechat_oauth_client_decide_into(const struct wechat_oauth_client *client,
                                                    const struct wechat_oauth_request *request,
                                                    struct wechat_oauth_decision *decision);

wechat_oauth_result wechat_oauth_client_decide_with_body(const struct wechat_oauth_client *client,
                                                         const struct wechat_oauth_request *request,
                                                         const uint8_t *body,
                                                         size_t body_len,
                                                         struct wechat_oauth_decision **out);

wechat_oauth_result wechat_oauth_client_login(const struct wechat_oauth_client *client,
                                              const char *return_path,
                                              size_t return_path_len,
                                              struct wechat_oauth_decision **out);

wechat_oauth_result wechat_oauth_client_complete(const struct wechat_oauth_client *client,
                                                 struct wechat_oauth_decision *decision);

wechat_oauth_result wechat_oauth_client_logout(const struct wechat_oauth_client *client,
                                               const char *cookie,
                                               size_t cookie_len,
                                               struct wechat_oauth_decision **out);

wechat_oauth_result wechat_oauth_client_session_identity(const struct wechat_oauth_client *client,
                                                         const char *cookie,
                                                         size_t cookie_len,
                                                         struct wechat_oauth_identity **out);

wechat_oauth_result wechat_oauth_decision_body_limit(const struct wechat_oauth_decision *decision,
                                                     size_t *out);

wechat_oauth_result wechat_oauth_decision_get_kind(const struct wechat_oauth_decision *decision,
                                                   wechat_oauth_decision_kind *out);

wechat_oauth_result wechat_oauth_decision_status(const struct wechat_oauth_decision *decision,
                                                 uint16_t *out);

wechat_oauth_result wechat_oauth_decision_body(const struct wechat_oauth_decision *decision,
                                               struct wechat_oauth_str *out);

wechat_oauth_result wechat_oauth_decision_header_count(const struct wechat_oauth_decision *decision,
                                                       size_t *out);

wechat_oauth_result wechat_oauth_decision_header(const struct wechat_oauth_decision *decision,
                                                 size_t index,
                                                 struct wechat_oauth_str *name,
                                                 struct wechat_oauth_str *value);

wechat_oauth_result wechat_oauth_decision_errcode(const struct wechat_oauth_decision *decision,
                                                  int64_t *out);

wechat_oauth_result wechat_oauth_decision_identity(const struct wechat_oauth_decision *decision,
                                                   const struct wechat_oauth_identity **out);

wechat_oauth_result wechat_oauth_decision_upstream_cookie(const struct wechat_oauth_decision *decision,
                                                          struct wechat_oauth_str *out);

wechat_oauth_result wechat_oauth_decision_upstream_path(const struct wechat_oauth_decision *decision,
                                                        struct wechat_oauth_str *out);

void wechat_oauth_decision_free(struct wechat_oauth_decision *decision);

wechat_oauth_result wechat_oauth_is_identity_header(struct wechat_oauth_str name, bool *out);

wechat_oauth_result wechat_oauth_identity_get(const struct wechat_oauth_identity *identity,
                                              uint32_t field,
                                              struct wechat_oauth_str *out);

wechat_oauth_result wechat_oauth_identity_header_count(const struct wechat_oauth_identity *identity,
                                                       size_t *out);

wechat_oauth_result wechat_oauth_identity_header(const struct wechat_oauth_identity *identity,
                                                 size_t index,
                                                 struct wechat_oauth_str *name,
                                                 struct wechat_oauth_str *value);

void wechat_oauth_identity_free(struct wechat_oauth_identity *identity);

wechat_oauth_result wechat_oauth_result_message(uint32_t result,
                                                char *buf,
                                                size_t len,
                                                size_t *written);

wechat_oauth_result wechat_oauth_last_error(char *buf, size_t len, size_t *written);
