"""HTTP/1.1 on the wire for the lean transport's direct routes: request bytes out, replies
parsed by httptools (llhttp, the C parser Node.js ships) as they arrive.

Why not h11 under httpcore, as before: h11 is a pure-Python state machine that validated
every header with regular expressions and fired a dozen events per reply, about 50 us of a
~450 us call; llhttp parses the same reply in ~3 us and is as strict (conflicting lengths,
bad chunk sizes and a body after a bodiless status are errors). Requests need no parser:
their headers are ours, checked once per header set (:func:`check_headers`).

The failures raised here are named as httpcore names its own, so that one mapping
(:mod:`~moodlemate.providers.openai.connection_errors`) reads both stacks: a name ending
in ``Timeout`` is a timeout, ``RemoteProtocolError`` a peer that broke off or lied.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Protocol

from moodlemate.ai.plugin import ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = [
    "MAX_HEAD_BYTES",
    "READ_BYTES",
    "ConnectError",
    "ConnectTimeout",
    "NetworkError",
    "Outgoing",
    "PooledReply",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Reply",
    "WriteError",
    "WriteTimeout",
    "check_headers",
    "request_head",
]

READ_BYTES = 64 * 1024
MAX_HEAD_BYTES = 100 * 1024
"""The most a status line and headers may take, as httpcore allowed h11: a server that
sends headers forever is cut here, not at the end of memory."""


class NetworkError(Exception):
    """The connection failed: the request may or may not have reached the server."""


class ConnectError(NetworkError):
    pass


class ReadError(NetworkError):
    pass


class WriteError(NetworkError):
    pass


class ConnectTimeout(NetworkError):
    pass


class ReadTimeout(NetworkError):
    pass


class WriteTimeout(NetworkError):
    pass


class RemoteProtocolError(NetworkError):
    """The server broke HTTP/1.1: closed mid-reply, or sent what is not a valid reply."""


_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")


def check_headers(headers: Iterable[tuple[bytes, bytes]]) -> None:
    """Refuse a header that would split the request (CR, LF, NUL) or is not a token: what
    h11 checked on every request, here once per header set (callers cache it)."""
    for name, value in headers:
        if not _NAME.fullmatch(name):
            raise ValidationError(f"header name {name!r} is not a valid HTTP header name")
        if not _VALUE.fullmatch(value):
            shown = name.decode("latin-1")
            raise ValidationError(f"the value of header {shown!r} holds a control character")


def request_head(method: bytes, target: bytes, headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers, without the body's length and the blank line that
    ends the head (both added per request by :meth:`Outgoing.wire`)."""
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    return b"".join(lines)


class Outgoing:
    """One request, ready to send: where, the head (built once per header set), the body.

    A direct route sends :meth:`wire`; a proxied one hands the parts to httpcore.
    """

    __slots__ = ("body", "head", "headers", "method", "origin", "timeout", "url")

    def __init__(
        self,
        method: bytes,
        url: str,
        origin: tuple[str, str, int],
        headers: tuple[tuple[bytes, bytes], ...],
        head: bytes,
        body: bytes | None,
        timeout: float | None,
    ) -> None:
        self.method = method
        self.url = url
        self.origin = origin
        self.headers = headers
        self.head = head
        self.body = body
        self.timeout = timeout

    def wire(self) -> bytes:
        """The whole request in one buffer: one system call sends it."""
        body = self.body
        if body is None:
            return self.head + b"\r\n"
        return b"%sContent-Length: %d\r\n\r\n%s" % (self.head, len(body), body)


def _new_parser(reply: Reply) -> Any:
    parser = _parser_class()(reply)
    # Lines ended by a bare LF, as h11 read them (some hand-made servers end lines so);
    # everything else stays strict.
    lenient = getattr(parser, "set_dangerous_leniencies", None)
    if lenient is not None:
        lenient(lenient_optional_cr_before_lf=True)
    return parser


def _head_end(data: bytes) -> int:
    """Where the head's blank line ends in ``data`` (CRLF or bare LF lines), or -1."""
    ends = [
        at + len(mark) for mark in (b"\r\n\r\n", b"\n\n", b"\n\r\n") if (at := data.find(mark)) >= 0
    ]
    return min(ends) if ends else -1


def _one_length(head: bytes) -> bytes:
    """``head`` with its Content-Length given once, where every value it gives agrees."""
    values: set[bytes] = set()
    kept: list[bytes] = []
    first = -1
    for line in head.splitlines(keepends=True):
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"content-length":
            values.update(v.strip() for v in value.split(b","))
            if first < 0:
                first = len(kept)
                kept.append(b"")
            continue
        kept.append(line)
    length = next(iter(values)) if len(values) == 1 else b""
    if not length.isdigit():
        raise RemoteProtocolError("the reply's Content-Length headers disagree")
    kept[first] = b"Content-Length: " + length + b"\r\n"
    return b"".join(kept)


def _parser_class() -> Any:
    import httptools  # type: ignore[import-untyped,unused-ignore]

    return httptools.HttpResponseParser


def _parser_errors() -> Any:
    """What httptools raises for a reply it will not read: a malformed one, and an upgrade
    (``101 Switching Protocols``), which is not a subclass of the first."""
    import httptools  # type: ignore[import-untyped,unused-ignore]

    return (httptools.HttpParserError, httptools.HttpParserUpgrade)


class Reply:
    """One reply as the parser reads it: status, headers, body pieces not yet taken.

    ``feed`` takes what the socket gave; ``pieces`` fills with decoded-from-framing body
    bytes (chunked framing removed; content coding is the reader's). Informational (1xx)
    replies are skipped, as h11 skipped them. After the reply ``complete`` is set, and
    ``reusable`` says whether the connection may carry another request: the server said
    keep-alive and sent nothing past the reply's end.
    """

    __slots__ = (
        "_head",
        "_head_bytes",
        "_parser",
        "_reread",
        "_reread_done",
        "complete",
        "extra",
        "headers",
        "headers_done",
        "keep_alive",
        "pieces",
        "status",
        "until_close",
    )

    def __init__(self) -> None:
        self._parser = _new_parser(self)
        self._head: list[bytes] = []
        """What came before the head's end, kept to read it again (:meth:`_read_again`)."""
        self._reread: bytes | None = None
        self._reread_done = False
        self._head_bytes = 0
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.until_close = False
        self.complete = False
        self.keep_alive = False
        self.extra = False
        self.pieces: list[bytes] = []

    # -- what the socket gave -------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``; an empty ``data`` is the server's end of stream."""
        if not data:
            self._end_of_stream()
            return
        if self.complete:
            self.extra = True  # bytes past the reply: this connection is not reused
            return
        if not self.headers_done:
            room = MAX_HEAD_BYTES - self._head_bytes
            if len(data) > room:  # the head's bound holds to the byte, not to the read
                self._parse(data[:room])
                self._head_bytes = MAX_HEAD_BYTES + 1
                if not self.headers_done:
                    raise RemoteProtocolError(
                        f"the reply's status line and headers exceed {MAX_HEAD_BYTES} bytes"
                    )
                data = data[room:]
            else:
                self._head_bytes += len(data)
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        if self.complete:
            self.extra = self.extra or bool(data)
            return
        if self._reread is not None:
            self._reread += data
            self._read_again()
            return
        if not self.headers_done:
            self._head.append(data)
        try:
            self._parser.feed_data(data)
        except _parser_errors() as exc:
            if self.status == 101:  # llhttp ends the reply, then stops at the switch
                raise RemoteProtocolError("the server switched protocols (HTTP 101)") from None
            if self.complete:
                # Bytes past the reply's end, in the same read: the reply stands (as when
                # they come in a later read), the connection is not reused.
                self.extra = True
                return
            if not self.headers_done and "Content-Length" in str(exc) and not self._reread_done:
                self._reread, self._head, self._reread_done = b"".join(self._head), [], True
                self._read_again()
                return
            raise RemoteProtocolError(f"the server sent a malformed HTTP reply ({exc})") from None
        if self.headers_done and self._head:
            self._head = []

    def _read_again(self) -> None:
        """A Content-Length repeated with one value (``5`` twice, or ``5, 5``), which llhttp
        refuses and HTTP allows (RFC 9110 8.6; h11 read it): once the head has all come, it is
        read again with the length given once. Differing values stay an error."""
        buffered = self._reread
        assert buffered is not None
        end = _head_end(buffered)
        if end < 0:
            return  # more to come; the head's size bound is counted in feed
        self._reread = None
        head = _one_length(buffered[:end])
        self._parser = _new_parser(self)
        self.headers, self.pieces = [], []
        self._parse(head + buffered[end:])

    def _end_of_stream(self) -> None:
        if self.complete:
            return
        if self.headers_done and self.until_close:
            self.complete = True  # a body delimited by the connection's close ends here
            return
        if self._head_bytes == 0 and not self.headers_done:
            raise RemoteProtocolError("Server disconnected without sending a response.")
        raise RemoteProtocolError("the server closed the connection before the reply ended")

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.extra and not self.until_close

    # -- the parser's callbacks -----------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.headers_done:
            return
        status = int(self._parser.get_status_code())
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim reply: the real one follows
            return
        self.status = status
        self.headers_done = True
        self.until_close = _until_close(status, self.headers)

    def on_body(self, body: bytes) -> None:
        if self.headers_done and not self.complete:
            self.pieces.append(body)

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            # Asked now: the parser forgets the reply's keep-alive once it has ended.
            self.keep_alive = bool(self._parser.should_keep_alive())
            self.complete = True

    def take(self) -> bytes:
        """The body bytes parsed so far, as one piece (b"" when there are none)."""
        pieces = self.pieces
        if not pieces:
            return b""
        self.pieces = []
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)


def _until_close(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the body runs until the server closes (no length, not chunked)."""
    if status in (204, 304) or status < 200:
        return False
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            return False
    return True


class _Lender(Protocol):
    def give_back(self, origin: Any, connection: Any, reusable: bool) -> None: ...


class PooledReply:
    """A reply whose headers have arrived, on a connection lent by a pool: what the sync and
    async replies share. The connection goes back once, when the body ended (reusable if the
    server allowed it) or when the reply is closed or fails (dropped unless complete)."""

    __slots__ = ("_connection", "_origin", "_pool", "_reply", "_timeout", "headers", "status")

    def __init__(
        self, pool: _Lender, origin: Any, connection: Any, reply: Reply, timeout: float | None
    ) -> None:
        self._pool: _Lender | None = pool
        self._origin = origin
        self._connection = connection
        self._reply = reply
        self._timeout = timeout
        self.status = reply.status
        self.headers = reply.headers

    def _finish(self, reusable: bool) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.give_back(self._origin, self._connection, reusable)
