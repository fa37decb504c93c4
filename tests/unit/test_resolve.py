import pytest
from envoy.service.auth.v3.external_auth_pb2 import CheckRequest

from authz.resolve import Route, Router, compile_path_template


def router():
    def r(service, endpoint, methods, path):
        tpl = compile_path_template(path) if path else None
        return Route(service, endpoint, frozenset(methods) if methods else None, tpl, endpoint)

    return Router(
        [
            r("orders", "list", ["GET"], "/v1/orders"),
            r("orders", "new", ["GET"], "/v1/orders/new"),
            r("orders", "get", ["GET"], "/v1/orders/{orderId}"),
            r("orders", "item", None, "/v1/orders/{orderId}/items/{itemId}"),
            r("pay", "pay", ["POST"], "/v1/pay"),
            r("pay", "hook", None, None),
        ]
    )


@pytest.mark.parametrize(
    ("method", "path", "context", "expected"),
    [
        ("GET", "/v1/orders", {}, ("list", {})),
        ("GET", "/v1/orders/new", {}, ("new", {})),
        ("GET", "/v1/orders/o%2F1", {}, ("get", {"orderId": "o/1"})),
        ("DELETE", "/v1/orders/a/items/b", {}, ("item", {"orderId": "a", "itemId": "b"})),
        ("POST", "/v1/orders", {}, None),
        ("GET", "/v1/orders/", {}, None),
        ("GET", "/v1/orders/a/b", {}, None),
        ("POST", "/v1/pay", {"service": "pay", "endpoint": "hook"}, ("hook", {})),
        ("GET", "/anything", {"service": "pay", "endpoint": "hook"}, ("hook", {})),
        (
            "GET",
            "/v1/orders/7",
            {"service": "orders", "endpoint": "get"},
            ("get", {"orderId": "7"}),
        ),
        ("GET", "/v1/orders", {"service": "pay", "endpoint": "nope"}, None),
        ("GET", "/v1/orders", {"service": "pay"}, None),
        ("POST", "/v1/pay", {"service": "pay"}, ("pay", {})),
        ("GET", "/v1/pay", {"service": "pay", "endpoint": "pay"}, None),
        # named by the route: the path only gives parameters, when its template has some
        ("GET", "/elsewhere", {"service": "orders", "endpoint": "list"}, ("list", {})),
        ("GET", "/elsewhere", {"service": "orders", "endpoint": "get"}, ("get", {})),
        ("GET", "/v1/orders", {"endpoint": "get"}, ("list", {})),
    ],
)
def test_resolution(method, path, context, expected):
    assert router().resolve(method, path, context) == expected
    # the same through Envoy's protobuf map (what decode passes)
    msg = CheckRequest()
    msg.attributes.context_extensions.update(context)
    assert router().resolve(method, path, msg.attributes.context_extensions) == expected


@pytest.mark.parametrize("bad", ["/a/{b", "/a/{b}/{b}", "/a/{1x}", "/a/b}"])
def test_bad_templates(bad):
    with pytest.raises(ValueError):
        compile_path_template(bad)
