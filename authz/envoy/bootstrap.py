"""`authz envoy-config`: an Envoy v3 bootstrap (YAML) routing every endpoint of a config.

Built from typed Envoy API objects (envoy-data-plane's dataclasses, serialised as proto3
JSON with snake_case names), so a misspelt field is an error here, not in Envoy.

- one route per endpoint: `:method` header matcher + exact `path` (fixed paths) or
  `safe_regex` (templates; `{name}` is one segment, `[^/]+`, exactly as authz matches it),
  exact paths first, then templates in config order (authz's own resolution order);
- per-route ext_authz `context_extensions` {service, endpoint}; the request body is buffered
  for Check (`pack_as_bytes`) only on routes whose rules read it or change it;
- ext_proc (same authz cluster) only on endpoints with body/response field rules, disabled
  per route elsewhere;
- fail closed: `failure_mode_allow: false`, `status_on_error` 503, for both filters;
- the catch-all route still goes through ext_authz (no context_extensions: authz resolves
  method + path, denies 403 with its JSON body, and logs/counts the request), and its action
  is a `direct_response` 403, so an unrouted request can never reach an upstream even if
  authz allowed it;
- HCM path normalisation, so authz sees the path the route matched.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import betterproto2
import yaml

from authz.authorizer import Authorizer
from authz.envoy import bootstrap_http
from authz.envoy.clusters import Upstream, cluster, socket_address, split_address, upstream
from authz.envoy.tls import ListenerTls, client_cert_settings, forward_name, transport_socket
from authz.plan import PLAN_REQUIRED_METADATA
from authz.resolve import compile_path_template

# envoy-data-plane's generated models trip pydantic deprecation warnings at import.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
    from envoy_data_plane.envoy.config.bootstrap.v3 import (
        Admin,
        Bootstrap,
        BootstrapStaticResources,
    )
    from envoy_data_plane.envoy.config.core.v3 import (
        ApiVersion,
        DataSource,
        GrpcService,
        GrpcServiceEnvoyGrpc,
        HeaderValue,
        HeaderValueOption,
        HttpProtocolOptionsHeadersWithUnderscoresAction,
        SubstitutionFormatString,
    )
    from envoy_data_plane.envoy.config.core.v3 import HttpProtocolOptions as CommonHttpOptions
    from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
    from envoy_data_plane.envoy.config.route.v3 import (
        DirectResponseAction,
        HeaderMatcher,
        Route,
        RouteAction,
        RouteConfiguration,
        RouteMatch,
        VirtualHost,
    )
    from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
    from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
        BufferSettings,
        CheckSettings,
        ExtAuthz,
        ExtAuthzPerRoute,
    )
    from envoy_data_plane.envoy.extensions.filters.http.ext_proc.v3 import (
        ExternalProcessor,
        ExtProcOverrides,
        ExtProcPerRoute,
        MetadataOptions,
        MetadataOptionsMetadataNamespaces,
        ProcessingMode,
        ProcessingModeBodySendMode,
        ProcessingModeHeaderSendMode,
    )
    from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
    from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
        HttpConnectionManager,
        HttpConnectionManagerPathWithEscapedSlashesAction,
        HttpFilter,
    )
    from envoy_data_plane.envoy.type.matcher.v3 import RegexMatcher, StringMatcher
    from envoy_data_plane.envoy.type.v3 import HttpStatus, StatusCode
    from envoy_data_plane.google.protobuf import Any as AnyProto


EXT_AUTHZ = "envoy.filters.http.ext_authz"
EXT_PROC = "envoy.filters.http.ext_proc"
ROUTER = "envoy.filters.http.router"
HCM = "envoy.filters.network.http_connection_manager"
AUTHZ_CLUSTER = "authz"
NO_ROUTE_BODY = '{"error": "no rule for this endpoint"}'


@dataclass
class BootstrapOptions:
    authz: str = "127.0.0.1:9001"  # authz gRPC address (Check and ext_proc)
    listen: str = "0.0.0.0:8000"  # Envoy's listener
    admin: str = "127.0.0.1:9901"  # Envoy's admin interface
    timeout: float = 0.5  # seconds: ext_authz/ext_proc gRPC deadline
    tls: ListenerTls | None = None  # TLS / mTLS on the listener (authz/envoy/tls.py)
    transport: str = "grpc"  # ext_authz's transport: grpc | http (authz/envoy/bootstrap_http.py)
    authz_http: str = "127.0.0.1:9003"  # authz's HTTP Check address (--transport http)


# --- routes ------------------------------------------------------------------------------


def path_regex(template: str) -> str:
    """`/v1/orders/{id}` -> `/v1/orders/[^/]+` (RE2, matched against the whole path)."""
    return compile_path_template(template).regex()


def _methods(method: str | list[str]) -> list[str]:
    methods = [method] if isinstance(method, str) else list(method)
    return [] if "*" in methods else methods


def route_match(path: str, method: str | list[str]) -> RouteMatch:
    methods = _methods(method)
    headers = []
    if len(methods) == 1:
        headers = [HeaderMatcher(name=":method", string_match=StringMatcher(exact=methods[0]))]
    elif methods:
        regex = "|".join(re.escape(m) for m in methods)
        headers = [
            HeaderMatcher(
                name=":method", string_match=StringMatcher(safe_regex=RegexMatcher(regex=regex))
            )
        ]
    template = compile_path_template(path)
    if template.has_parameters:
        return RouteMatch(safe_regex=RegexMatcher(regex=template.regex()), headers=headers)
    return RouteMatch(path=path, headers=headers)


def endpoint_route(
    ep: Any, declared: Any, cluster_name: str, max_body: int, with_ext_proc: bool, http: bool
) -> Route:
    """The route of one compiled endpoint (`ep`) declared as `declared` in the config."""
    # The HTTP transport has no context_extensions: there authz resolves method + path.
    context = {} if http else {"service": ep.service, "endpoint": ep.name}
    settings = CheckSettings(context_extensions=context)
    if ep.reads_params or ep.field_rules:  # Check needs the body (field rules hash it)
        settings.with_request_body = BufferSettings(
            max_request_bytes=max_body, allow_partial_message=False, pack_as_bytes=True
        )
    per_filter = {EXT_AUTHZ: AnyProto.pack(ExtAuthzPerRoute(check_settings=settings))}
    if with_ext_proc and not ep.field_rules:
        per_filter[EXT_PROC] = AnyProto.pack(ExtProcPerRoute(disabled=True))
    elif with_ext_proc:  # Check always plans here: a stream without a plan fails closed
        marker = HeaderValue(key=PLAN_REQUIRED_METADATA, value="required")
        overrides = ExtProcOverrides(grpc_initial_metadata=[marker])
        per_filter[EXT_PROC] = AnyProto.pack(ExtProcPerRoute(overrides=overrides))
    return Route(
        name=f"{ep.service}.{ep.name}",
        match=route_match(declared.path, declared.method),
        route=RouteAction(cluster=cluster_name),
        typed_per_filter_config=per_filter,
    )


def catch_all(with_ext_proc: bool) -> Route:
    per_filter = {EXT_PROC: AnyProto.pack(ExtProcPerRoute(disabled=True))} if with_ext_proc else {}
    return Route(
        name="no-endpoint",
        match=RouteMatch(prefix="/"),
        direct_response=DirectResponseAction(
            status=403, body=DataSource(inline_string=NO_ROUTE_BODY)
        ),
        response_headers_to_add=[
            HeaderValueOption(header=HeaderValue(key="content-type", value="application/json"))
        ],
        typed_per_filter_config=per_filter,
    )


# --- filters -----------------------------------------------------------------------------


def _grpc(timeout: float) -> GrpcService:
    return GrpcService(
        envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
        timeout=timedelta(seconds=timeout),
    )


def ext_authz_filter(timeout: float, peer_certificate: bool = False) -> HttpFilter:
    config = ExtAuthz(
        include_peer_certificate=peer_certificate,  # mTLS: the verified client certificate
        grpc_service=_grpc(timeout),
        transport_api_version=ApiVersion.V3,
        failure_mode_allow=False,  # authz down or slow: deny (503), never allow
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
    )
    return HttpFilter(name=EXT_AUTHZ, typed_config=AnyProto.pack(config))


def ext_proc_filter(timeout: float) -> HttpFilter:
    config = ExternalProcessor(
        grpc_service=_grpc(max(timeout, 2.0)),
        failure_mode_allow=False,
        status_on_error=HttpStatus(code=StatusCode.ServiceUnavailable),
        message_timeout=timedelta(seconds=1),
        allow_mode_override=True,  # authz narrows the mode to what the plan needs
        # The plan decided in Check travels in the ext_authz dynamic metadata.
        metadata_options=MetadataOptions(
            forwarding_namespaces=MetadataOptionsMetadataNamespaces(untyped=[EXT_AUTHZ])
        ),
        processing_mode=ProcessingMode(
            request_header_mode=ProcessingModeHeaderSendMode.SEND,
            request_body_mode=ProcessingModeBodySendMode.BUFFERED,
            response_header_mode=ProcessingModeHeaderSendMode.SEND,
            response_body_mode=ProcessingModeBodySendMode.BUFFERED,
        ),
    )
    return HttpFilter(name=EXT_PROC, typed_config=AnyProto.pack(config))


def access_log() -> AccessLog:
    fmt = (
        "[envoy] %REQ(:METHOD)% %REQ(:PATH)% %RESPONSE_CODE% %RESPONSE_FLAGS% "
        "%RESPONSE_CODE_DETAILS% %REQ(X-REQUEST-ID)%\n"
    )
    log = StdoutAccessLog(
        log_format=SubstitutionFormatString(text_format_source=DataSource(inline_string=fmt))
    )
    return AccessLog(name="envoy.access_loggers.stdout", typed_config=AnyProto.pack(log))


# --- the bootstrap -----------------------------------------------------------------------


def build_bootstrap(
    authorizer: Authorizer, options: BootstrapOptions
) -> tuple[Bootstrap, list[str]]:
    """(bootstrap, notes): notes name the endpoints that could not be routed, and why."""
    config = authorizer.config
    notes: list[str] = []
    upstreams: dict[str, Upstream] = {}
    for sname, service in config.services.items():
        if service.url:
            upstreams[sname] = upstream(sname, service.url)
        elif service.endpoints:
            notes.append(f"service {sname}: no url, its endpoints are not routed")
    http = options.transport == "http"
    if options.transport not in ("grpc", "http"):
        raise ValueError(f"--transport: expected grpc or http, got {options.transport!r}")
    if http and (reasons := bootstrap_http.refusals(authorizer)):
        raise ValueError("--transport http cannot serve this config:\n  " + "\n  ".join(reasons))
    with_ext_proc = any(ep.field_rules for ep in authorizer.endpoints)
    exact: list[Route] = []
    templated: list[Route] = []
    for ep in authorizer.endpoints:
        declared = config.services[ep.service].endpoints[ep.name]
        if ep.service not in upstreams:
            continue
        if declared.path is None:
            notes.append(f"{ep.service}.{ep.name}: no path, not routed")
            continue
        max_body = config.limits.maxBodyBytes
        route = endpoint_route(ep, declared, ep.service, max_body, with_ext_proc, http)
        (templated if compile_path_template(declared.path).has_parameters else exact).append(route)
    mtls = options.tls is not None and options.tls.client_ca is not None
    filters = [
        bootstrap_http.ext_authz_http_filter(authorizer, options.timeout, "")
        if http  # XFCC (SANITIZE_SET) carries the client certificate on this transport
        else ext_authz_filter(options.timeout, peer_certificate=mtls)
    ]
    if with_ext_proc:
        filters.append(ext_proc_filter(options.timeout))
    filters.append(HttpFilter(name=ROUTER, typed_config=AnyProto.pack(Router())))
    hcm = HttpConnectionManager(
        stat_prefix="ingress",
        normalize_path=True,  # RFC 3986: /a/./b/../c -> /a/c
        merge_slashes=True,  # //v1//orders -> /v1/orders
        path_with_escaped_slashes_action=(
            HttpConnectionManagerPathWithEscapedSlashesAction.REJECT_REQUEST  # %2F, %5C -> 400
        ),
        # x_user_id beside x-user-id is one header to CGI/WSGI, PHP and Rack: 400 at the edge
        common_http_protocol_options=CommonHttpOptions(
            headers_with_underscores_action=(
                HttpProtocolOptionsHeadersWithUnderscoresAction.REJECT_REQUEST
            )
        ),
        access_log=[access_log()],
        **client_cert_settings(options.tls),  # x-forwarded-client-cert: never the client's
        route_config=RouteConfiguration(
            name=config.project,
            virtual_hosts=[
                VirtualHost(
                    name=config.project,
                    domains=["*"],
                    routes=[*exact, *templated, catch_all(with_ext_proc)],
                )
            ],
        ),
        http_filters=filters,
    )
    listen = split_address(options.listen, "--listen")
    chain = FilterChain(filters=[Filter(name=HCM, typed_config=AnyProto.pack(hcm))])
    if options.tls is not None:
        chain.transport_socket = transport_socket(options.tls)
    listener = Listener(name="ingress", address=socket_address(*listen), filter_chains=[chain])
    authz_host, authz_port = split_address(options.authz, "--authz-address")
    clusters = []
    if not http or with_ext_proc:  # gRPC: Check, or (over HTTP) ext_proc only
        clusters.append(cluster(AUTHZ_CLUSTER, authz_host, authz_port, http2=True))
    if http:
        check = cluster(
            bootstrap_http.AUTHZ_HTTP_CLUSTER,
            *split_address(options.authz_http, "--authz-http-address"),
        )
        check.typed_extension_protocol_options = bootstrap_http.http1_options()
        clusters.append(check)
    for u in upstreams.values():
        clusters.append(cluster(u.cluster, u.host, u.port, sni=u.host if u.tls else ""))
    admin = Admin(address=socket_address(*split_address(options.admin, "--admin")))
    resources = BootstrapStaticResources(listeners=[listener], clusters=clusters)
    return Bootstrap(admin=admin, static_resources=resources), notes


def bootstrap_dict(bootstrap: Bootstrap, tls: ListenerTls | None = None) -> dict[str, Any]:
    out = bootstrap.to_dict(casing=betterproto2.Casing.SNAKE)
    # proto3 JSON leaves out fields at their default; say the fail-closed ones explicitly.
    for f in _http_filters(out):
        if f["name"] in (EXT_AUTHZ, EXT_PROC):
            f["typed_config"]["failure_mode_allow"] = False
    for listener in out["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                if f["name"] == HCM:
                    f["typed_config"]["forward_client_cert_details"] = forward_name(tls)
    return out


def _http_filters(out: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for listener in out["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for f in chain["filters"]:
                found.extend(f["typed_config"].get("http_filters", []))
    return found


def render_bootstrap(authorizer: Authorizer, options: BootstrapOptions) -> str:
    bootstrap, notes = build_bootstrap(authorizer, options)
    head = [
        "# Envoy bootstrap generated by `authz envoy-config`",
        f"# project {authorizer.config.project}, config version {authorizer.version};"
        f" authz at {options.authz_http if options.transport == 'http' else options.authz}"
        f" ({options.transport}).",
        *(f"# note: {n}" for n in notes),
    ]
    out = bootstrap_dict(bootstrap, options.tls)
    body = yaml.safe_dump(out, sort_keys=False, width=1000)
    return "\n".join(head) + "\n" + body
