"""The one-pass inbound header check against h2's own: it refuses exactly what h2 refuses."""

from __future__ import annotations

from h2.exceptions import ProtocolError
from h2.utilities import HeaderValidationFlags, validate_headers
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from hello_asgi import h2_headers
from hello_asgi.h2_headers import request_problem, trailers_problem

NAMES = [b":method", b":scheme", b":path", b":authority", b":protocol", b":status", b":custom", b":", b"::path",
         b"host", b"te", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade",
         b"cookie", b"x-ok", b"content-length", b"", b"X-Upper", b"a b", b"a:b", b"caf\xc3\xa9", b"del\x7f",
         b"tab\t", b"!#$%&'*+-.^_`|~09"]
VALUES = [b"GET", b"CONNECT", b"POST", b"/", b"", b"http", b"websocket", b"example.test", b"other.test",
          b"trailers", b"TraiLers", b"gzip", b" lead", b"trail ", b"\ttab", b"in side", b"nul\x00",
          b"lf\n", b"cr\r", b"\xff\xfe", b"*"]
# Valid requests, to mix in, so that accepted blocks are as common as refused ones.
BASES = [
    [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"example.test")],
    [(b":method", b"CONNECT"), (b":authority", b"example.test")],
    [(b":method", b"CONNECT"), (b":protocol", b"websocket"), (b":scheme", b"http"), (b":path", b"/"),
     (b":authority", b"example.test")],
]

# Fields each near one rule's edge, so that a block breaking one rule alone is common.
EDGES = [(b"te", b"trailers"), (b"te", b"TraiLers"), (b"te", b"gzip"), (b":path", b""), (b":path", b"*"),
         (b"host", b"example.test"), (b"host", b"other.test"), (b"cookie", b""), (b"x-ok", b"in side"),
         (b":protocol", b"websocket"), (b":scheme", b"https")]
field = st.one_of(st.sampled_from(EDGES), st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)))
fields = st.lists(field, max_size=3)


@st.composite
def blocks(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    """A base request with a field dropped or given another value, and fields inserted."""
    block = list(draw(st.sampled_from(BASES)))
    change = draw(st.sampled_from(["none", "drop", "value"]))
    index = draw(st.integers(0, len(block) - 1))
    if change == "drop":
        del block[index]
    elif change == "value":
        block[index] = (block[index][0], draw(st.sampled_from(VALUES + [b""] * 4)))
    for field in draw(fields):
        block.insert(draw(st.integers(0, len(block))), field)
    return block


def h2_refuses(block: list[tuple[bytes, bytes]], trailer: bool) -> bool:
    flags = HeaderValidationFlags(is_client=False, is_trailer=trailer, is_response_header=False,
                                  is_push_promise=False)
    try:
        list(validate_headers(block, flags))
    except ProtocolError:
        return True
    return False


class DifferentialTests(unittest.TestCase):
    @settings(max_examples=3000, deadline=None)
    @given(blocks())
    def test_requests_refused_exactly_as_h2_refuses_them(self, block: list[tuple[bytes, bytes]]) -> None:
        self.assertEqual(request_problem(block) is not None, h2_refuses(block, trailer=False), block)

    @settings(max_examples=1000, deadline=None)
    @given(fields)
    def test_trailers_refused_exactly_as_h2_refuses_them(self, block: list[tuple[bytes, bytes]]) -> None:
        self.assertEqual(trailers_problem(block) is not None, h2_refuses(block, trailer=True), block)

    def test_both_kinds_occur(self) -> None:
        """The cases above are not all of one kind: valid requests pass and each rule refuses."""
        self.assertIsNone(request_problem(BASES[0]))
        self.assertIsNone(request_problem(BASES[2]))
        self.assertIsNone(trailers_problem([(b"x-ok", b"1"), (b"te", b"trailers")]))
        for extra in [(b"X-Upper", b"1"), (b"connection", b"close"), (b"te", b"gzip"), (b"x-ok", b" lead"),
                      (b"x-ok", b"lf\n"), (b":path", b"/again"), (b"host", b"other.test")]:
            self.assertIsNotNone(request_problem([*BASES[0], extra]), extra)
        self.assertIsNotNone(request_problem([(b"x-ok", b"1"), *BASES[0]]))  # pseudo-header after a field
        self.assertIsNotNone(request_problem(BASES[0][1:]))  # no :method
        self.assertIsNotNone(trailers_problem([(b":path", b"/")]))


class GoodFieldMemoTests(unittest.TestCase):
    """Fields found good are remembered; the block's own rules are still checked each time."""

    BLOCK = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"), (b":path", b"/"),
             (b"user-agent", b"memo-test")]

    def test_remembered_fields_still_obey_the_block_rules(self) -> None:
        self.assertIsNone(request_problem(self.BLOCK))
        self.assertIn(self.BLOCK[-1], h2_headers._good_fields)
        reordered = [self.BLOCK[-1], *self.BLOCK[:-1]]  # a pseudo-header after a regular field
        self.assertIsNotNone(request_problem(reordered))
        self.assertIsNotNone(request_problem([*self.BLOCK, self.BLOCK[1]]))  # :scheme twice
        self.assertIsNotNone(request_problem([*self.BLOCK, (b"connection", b"close")]))

    def test_the_memo_stays_bounded(self) -> None:
        for n in range(3 * h2_headers._good_fields.most):
            self.assertIsNone(request_problem([*self.BLOCK[:4], (b"x-n", b"%d" % n)]))
            self.assertLessEqual(len(h2_headers._good_fields), h2_headers._good_fields.most)
        long_value = (b"x-long", b"v" * (h2_headers._good_fields.longest + 1))
        self.assertIsNone(request_problem([*self.BLOCK[:4], long_value]))
        self.assertNotIn(long_value, h2_headers._good_fields)
        bad = (b"x-bad", b" leading space")
        self.assertIsNotNone(request_problem([*self.BLOCK[:4], bad]))
        self.assertNotIn(bad, h2_headers._good_fields)


class OutboundBlockTests(unittest.TestCase):
    """``response_block``: every response head on a stream, one Server and Date policy."""

    def test_a_final_response_gets_server_and_date_unless_the_app_sent_them(self) -> None:
        block = h2_headers.response_block(200, [(b"Content-Type", b" text/plain\t")], b"hello-asgi", lambda: b"D")
        self.assertEqual(block, [(b":status", b"200"), (b"content-type", b"text/plain"), (b"server", b"hello-asgi"),
                                 (b"date", b"D")])
        own = h2_headers.response_block(404, [(b"Server", b"mine"), (b"date", b"then")], b"hello-asgi", lambda: b"D")
        self.assertEqual(own, [(b":status", b"404"), (b"server", b"mine"), (b"date", b"then")])

    def test_connection_specific_fields_and_te_are_dropped(self) -> None:
        headers = [(b"Connection", b"close"), (b"keep-alive", b"5"), (b"Transfer-Encoding", b"chunked"),
                   (b"upgrade", b"h2c"), (b"proxy-connection", b"x"), (b"te", b"trailers"), (b"x-kept", b"1")]
        self.assertEqual(h2_headers.response_block(200, headers, None, None), [(b":status", b"200"), (b"x-kept", b"1")])

    def test_an_informational_response_gets_neither(self) -> None:
        block = h2_headers.response_block(103, [(b"link", b"</a>")], b"hello-asgi", lambda: b"D")
        self.assertEqual(block, [(b":status", b"103"), (b"link", b"</a>")])


class SplitRequestTests(unittest.TestCase):
    def test_pseudo_fields_cookies_hop_by_hop_and_trailers(self) -> None:
        pseudo, headers, trailers = h2_headers.split_request([
            (b":method", b"GET"), (b":path", b"/"), (b":authority", b"a.test"), (b"cookie", b"a=1"),
            (b"host", b"a.test"), (b"http2-settings", b"AAA"), (b"te", b"trailers"), (b"cookie", b"b=2"),
        ])
        self.assertEqual(pseudo, {b":method": b"GET", b":path": b"/", b":authority": b"a.test"})
        self.assertEqual(headers, [(b"host", b"a.test"), (b"te", b"trailers"), (b"cookie", b"a=1; b=2")])
        self.assertTrue(trailers)
        self.assertFalse(h2_headers.split_request([(b":method", b"GET"), (b"te", b"gzip")])[2])
