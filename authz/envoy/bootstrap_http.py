"""`authz envoy-config --transport http`: ext_authz over Envoy's `http_service`.

Everything the gRPC transport carries, the HTTP way (authz/envoy/http/encode.py):
- all request headers go to authz (`allowed_headers` `.*`) with the client's content-length
  under CONTENT_LENGTH_HEADER (Envoy sends the length of the body it forwards instead), and
  a client's own copy of that header is never forwarded (`disallowed_headers`);
- the headers authz sets upstream are named (`allowed_upstream_headers`); removals travel in
  `x-envoy-auth-headers-to-remove`; a denial keeps its content-type and www-authenticate
  (`allowed_client_headers`); the body plan becomes ext_authz dynamic metadata
  (`dynamic_metadata_from_headers`), which ext_proc (still gRPC) reads;
- no context_extensions: authz resolves endpoints by method and path, in the order the routes
  are generated (exact paths, then templates in config order), so both pick the same one.

What HTTP cannot carry is refused with the reason (`refusals`), never dropped silently.
"""

from __future__ import annotations

import warnings
from datetime import timedelta

from authz.authorizer import DRY_RUN_HEADER, Authorizer, CompiledEndpoint
from authz.envoy.clusters import HTTP_OPTIONS
from authz.envoy.http.decode import CONTENT_LENGTH_HEADER
from authz.plan import PLAN_HEADER

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.core.v3 import (
        ApiVersion,
        HeaderValue,
        Http1ProtocolOptions,
        HttpUri,
    )
    from envoy_data_plane.envoy.config.core.v3 import HttpProtocolOptions as CommonHttpOptions
    from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
        AuthorizationRequest,
        AuthorizationResponse,
        ExtAuthz,
        HttpService,
    )
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpFilter,
    )
    from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
        HttpProtocolOptions,
        HttpProtocolOptionsExplicitHttpConfig,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import (
        ListStringMatcher,
        RegexMatcher,
        StringMatcher,
    )
    from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
    from envoy_data_plane.google.protobuf import Any as AnyProto

AUTHZ_HTTP_CLUSTER = "authz-http"
# Envoy closes idle connections to authz before authz does (authz/envoy/http/server.py), so
# a Check is never sent on a connection being closed.
IDLE_TIMEOUT = timedelta(seconds=60)
_BODYLESS = frozenset(("GET", "HEAD", "DELETE", "OPTIONS"))


def refusals(authorizer: Authorizer) -> list[str]:
    """Why this config cannot be served over the HTTP transport (empty: it can)."""
    out = []
    for ep in authorizer.endpoints:
        name = f"{ep.service}.{ep.name}"
        targets = ep.field_targets
        if "query" in targets:
            out.append(
                f"{name}: its field rules change the query, which an HTTP Check response cannot"
            )
        elif "params" in targets and _bodyless(authorizer, ep):
            out.append(
                f"{name}: its field rules change args.params, which is the query for a request "
                "without a body, and an HTTP Check response cannot change the query"
            )
        if "headers" in targets and ep.reading.header_names is None:
            out.append(f"{name}: its field rules change headers whose names are not fixed")
    return out


def _bodyless(authorizer: Authorizer, ep: CompiledEndpoint) -> bool:
    method = authorizer.config.services[ep.service].endpoints[ep.name].method
    methods = {method} if isinstance(method, str) else set(method)
    return "*" in methods or bool(methods & _BODYLESS)


def upstream_headers(authorizer: Authorizer) -> list[str]:
    """Every header a Check may set on the upstream request."""
    names = {authorizer.config.auth.serviceToken.header.lower(), DRY_RUN_HEADER}
    for ep in authorizer.endpoints:
        if "headers" in ep.field_targets and ep.reading.header_names:
            names |= ep.reading.header_names
    return sorted(names)


def _exact(names: list[str]) -> ListStringMatcher:
    return ListStringMatcher(patterns=[StringMatcher(exact=n) for n in names])


def ext_authz_http_filter(authorizer: Authorizer, timeout: float, path_prefix: str) -> HttpFilter:
    service = HttpService(
        server_uri=HttpUri(
            uri=f"http://{AUTHZ_HTTP_CLUSTER}", cluster=AUTHZ_HTTP_CLUSTER,
            timeout=timedelta(seconds=timeout),
        ),
        path_prefix=path_prefix,
        authorization_request=AuthorizationRequest(
            headers_to_add=[HeaderValue(key=CONTENT_LENGTH_HEADER, value="%REQ(content-length)%")]
        ),
        authorization_response=AuthorizationResponse(
            allowed_upstream_headers=_exact(upstream_headers(authorizer)),
            allowed_client_headers=_exact(["content-type", "www-authenticate"]),
            dynamic_metadata_from_headers=_exact([PLAN_HEADER]),
        ),
    )  # fmt: skip
    config = ExtAuthz(
        http_service=service,
        transport_api_version=ApiVersion.V3,
        failure_mode_allow=False,  # authz down, slow or answering 5xx: deny (503)
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        allowed_headers=ListStringMatcher(patterns=[StringMatcher(safe_regex=RegexMatcher(regex=".*"))]),
        disallowed_headers=_exact([CONTENT_LENGTH_HEADER]),
    )  # fmt: skip
    return HttpFilter(name="envoy.filters.http.ext_authz", typed_config=AnyProto.pack(config))


def http1_options() -> dict[str, AnyProto]:
    """The authz-http cluster's protocol options: HTTP/1.1 keep-alive, Envoy closes idle."""
    options = HttpProtocolOptions(
        common_http_protocol_options=CommonHttpOptions(idle_timeout=IDLE_TIMEOUT),
        explicit_http_config=HttpProtocolOptionsExplicitHttpConfig(
            http_protocol_options=Http1ProtocolOptions()
        ),
    )
    return {HTTP_OPTIONS: AnyProto.pack(options)}
