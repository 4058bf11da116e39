"""An upload's multipart form, read from the request stream: the file part goes straight to a
hidden file in the files folder (never to a spool in the temp folder, never whole in memory)."""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from lmtune.services import RequestError
from lmtune.settings import Settings
from lmtune.uploads import PartialUpload, too_large

FIELD_LIMIT = 1024  # bytes of a text field such as purpose
MAX_PARTS = 8
FLUSH_BYTES = 1 << 20  # file data is written to disk in slices of about this size, off the event loop

FORM_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "JSONL, one example a line"},
                        "purpose": {"type": "string", "enum": ["fine-tune", "evals"]},
                    },
                }
            }
        },
    }
}


@dataclass
class UploadForm:
    upload: PartialUpload | None = None
    filename: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def bad_form(message: str) -> RequestError:
    return RequestError(400, message, param="file", code="invalid_form")


class _FormReader:
    """python-multipart's streaming parser, with callbacks that keep one part's headers at a time."""

    def __init__(self, settings: Settings, boundary: bytes):
        self.settings, self.form = settings, UploadForm()
        self.pending: list[bytes] = []
        self.pending_bytes = self.parts = 0
        self._header_name, self._header_value, self._headers = bytearray(), bytearray(), {}
        self._field: str | None = None  # the text field being read; None while in the file part
        self._value = bytearray()
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_name_data,
                "on_header_value": self._header_value_data,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
        )

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise bad_form(f"the form has more than {MAX_PARTS} parts; send the fields file and purpose")
        self._headers = {}

    def _header_name_data(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_data(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name, self._header_value = bytearray(), bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition"))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            self._field, self._value = name, bytearray()
            return
        if name != "file" or self.form.upload is not None:
            raise bad_form("send one file, in the form field named file")
        self._field = None
        self.form.filename = options[b"filename"].decode("utf-8", "replace")
        self.form.upload = PartialUpload(self.settings)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is not None:
            self._value += data[start:end]
            if len(self._value) > FIELD_LIMIT:
                raise bad_form(f"the form field {self._field[:40]!r} is longer than {FIELD_LIMIT} bytes")
            return
        self.pending.append(data[start:end])
        self.pending_bytes += end - start
        if self.form.upload.size + self.pending_bytes > self.settings.max_upload_bytes:
            raise too_large(self.settings.max_upload_bytes)

    def _part_end(self) -> None:
        if self._field is not None:
            self.form.fields[self._field] = self._value.decode("utf-8", "replace")

    def flush(self) -> None:
        if self.pending:
            self.form.upload.write(b"".join(self.pending))
            self.pending, self.pending_bytes = [], 0


async def receive_upload_form(request: Request, settings: Settings) -> UploadForm:
    """The form with its file part written to disk; 400 for a malformed form or no file part."""
    content_type, options = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or not options.get(b"boundary"):
        raise bad_form("send the upload as multipart/form-data with the fields file and purpose")
    try:
        reader = _FormReader(settings, options[b"boundary"])
    except FormParserError:
        raise bad_form("the multipart boundary is malformed") from None
    try:
        async for chunk in request.stream():
            reader.parser.write(chunk)
            if reader.pending_bytes >= FLUSH_BYTES:
                await run_in_threadpool(reader.flush)
        reader.parser.finalize()
        if reader.form.upload is None:
            raise bad_form("the form has no file: send it in the field named file")
        await run_in_threadpool(reader.flush)
    except FormParserError:
        _discard(reader.form)
        raise bad_form("the multipart form is malformed") from None
    except BaseException:
        _discard(reader.form)
        raise
    return reader.form


def _discard(form: UploadForm) -> None:
    if form.upload is not None:
        form.upload.discard()
