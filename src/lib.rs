//! ngx_http_api_sessions_module: groups the requests in front of an API into user sessions.
