import pytest

from authz.param_names import every_name, has_control_character, readings


@pytest.mark.parametrize(
    ("raw", "read_as"),
    [
        ("owner%00x", "owner"),  # PHP cuts a name at NUL
        ("owner%00", "owner"),
        ("%20%20owner", "owner"),  # PHP drops leading spaces
        ("owner.id", "owner_id"),  # PHP: `.` and space become `_`
        ("owner+id", "owner_id"),
        ("owner%20id", "owner_id"),
        ("owner[id", "owner_id"),  # PHP: a `[` with no `]` after it becomes `_`
        ("owner%5Bid", "owner_id"),
        ("[owner]", "owner"),  # Rack 2 and Express's qs
        ("%5Bowner%5D", "owner"),
        ("%5bowner%5d", "owner"),  # lower-case escapes
        ("]owner", "owner"),  # Rack 2 skips leading brackets ...
        ("%5Downer", "owner"),
        ("owner]", "owner"),  # ... and trailing ones
        ("owner]]", "owner"),
        ("[]owner", "owner"),
        ("owner[]", "owner"),  # PHP, qs, Rack: (part of) owner
        ("owner[x][y]", "owner"),
        ("[owner][x]", "owner"),  # qs, Rack 2: owner[x]
        ("owner.x", "owner"),  # Spring and ASP.NET binders nest on `.`
        ("order.owner", "owner"),  # ASP.NET binds a parameter's property `owner`
        ("!owner", "owner"),  # Spring's WebDataBinder default for `owner`
        ("Owner", "owner"),  # ASP.NET: case-insensitive
        ("own%65r", "owner"),
        ("%4Fwner", "owner"),
    ],
)
def test_spellings_frameworks_read_as_the_name(raw, read_as):
    assert read_as in every_name(raw)


@pytest.mark.parametrize(
    ("raw", "not_read_as"),
    [("owners", "owner"), ("filter[a]", "filter[b]"), ("[owner]", "[owner"), ("ow_ner", "owner")],
)
def test_other_names_are_not_read_as_the_name(raw, not_read_as):
    assert not_read_as not in every_name(raw)


def test_a_plain_name_is_read_as_itself_only():
    assert readings("user_Id-2") == (frozenset({"user_id-2"}), frozenset())


def test_nested_names_give_the_top_level_name_apart():
    names, tops = readings("a[b][c]")
    assert names == {"a[b][c]"} and tops == {"a"}
    assert readings("[a]")[1] == frozenset()  # `a` is a name here, not a part of one


def test_php_drops_a_name_that_starts_with_a_bracket():
    # PHP: no variable at all; Rack 2 and qs read `owner`; nobody reads `[owner` or ``
    assert every_name("[owner") >= {"owner", "[owner"} and "" not in every_name("[")


@pytest.mark.parametrize(
    "raw", ["a%00", "%00a", "a%0Ab", "a%0d", "a%09", "a%7F", "a%C2%85", "a\x01"]
)
def test_control_characters_raw_or_encoded_are_found(raw):
    assert has_control_character(raw)


@pytest.mark.parametrize("raw", ["a", "a%20b", "caf%C3%A9", "a%FF", "%25"])
def test_printable_names_have_no_control_character(raw):
    assert not has_control_character(raw)


@pytest.mark.parametrize(
    ("raw", "names", "tops"),
    [
        # ASP.NET's property binding: whatever follows the first `.`, a leading one too
        (".a", {".a", "_a", "a"}, set()),
        ("owner.id", {"owner.id", "owner_id", "id"}, {"owner"}),
        # Rack 2 reads `owner]x` as owner[x] and keeps `owner[` whole
        ("owner]x", {"owner]x", "owner[x]"}, {"owner"}),
        ("owner[", {"owner[", "owner_"}, {"owner"}),
        # qs reads `[a]b` as `a` (the rest after a leading group is dropped), Rack 2 as a[b]
        ("[a]b", {"[a]b", "a[b]", "a"}, set()),
        ("a[b][c]", {"a[b][c]"}, {"a"}),
    ],
)
def test_the_readings_of_a_name_exactly(raw, names, tops):
    assert readings(raw) == (frozenset(names), frozenset(tops))
