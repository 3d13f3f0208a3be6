import io
import json
import logging

from project.logging import JsonFormatter, RequestIdFilter


def test_request_log_line_is_json_with_the_request_id(client):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("gatehouse.request")
    logger.addHandler(handler)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        client.get("/healthz", HTTP_X_REQUEST_ID="req-0123456789")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 1
    line = lines[0]
    assert line["request_id"] == "req-0123456789"
    assert line["message"] == "GET /healthz 200"
    assert line["status"] == 200
    assert line["path"] == "/healthz"
    assert line["level"] == "INFO"
    assert isinstance(line["duration_ms"], float)


def test_lines_outside_a_request_carry_a_placeholder_id():
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    RequestIdFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"
    assert json.loads(JsonFormatter().format(record))["message"] == "hello world"
