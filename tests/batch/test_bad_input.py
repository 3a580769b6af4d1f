"""Bad input is refused at upload or create with the API's error shape naming the line, and bad service flags
end in one message and exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.batch.conftest import BatchService, requests_file
from tests.serving.conftest import ThreadServer

MAX_BYTES = 4000


@pytest.fixture(scope="module")
def client(upstream: ThreadServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    svc = BatchService(upstream.url, tmp_path_factory.mktemp("state"), "--max-file-bytes", str(MAX_BYTES))
    svc.start()
    yield svc.client("unused")
    svc.stop()


@pytest.fixture(scope="module")
def model(upstream: ThreadServer) -> str:
    return str(upstream.settings.name)


def _line(custom_id: str | None, model: str, url: str = "/v1/chat/completions") -> dict[str, Any]:
    line: dict[str, Any] = {"method": "POST", "url": url,
                            "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]}}
    if custom_id is not None:
        line["custom_id"] = custom_id
    return line


def _upload_error(client: openai.OpenAI, path: Path, text: str) -> openai.APIStatusError:
    path.write_text(text)
    with pytest.raises(openai.APIStatusError) as caught:
        client.files.create(file=path.open("rb"), purpose="batch")
    return caught.value


def _dump(*lines: dict[str, Any]) -> str:
    return "".join(json.dumps(line) + "\n" for line in lines)


@pytest.mark.parametrize(("case", "code", "line"), [
    ("not_json", "invalid_json_line", 2),
    ("no_custom_id", "missing_custom_id", 3),
    ("duplicate", "duplicate_custom_id", 3),
    ("unknown_model", "model_not_found", 2),
    ("bad_url", "invalid_url", 1),
])
def test_upload_refuses_a_wrong_line_by_number(client: openai.OpenAI, model: str, tmp_path: Path, case: str,
                                               code: str, line: int) -> None:
    good = [_line("a", model), _line("b", model)]
    text = {
        "not_json": _dump(good[0]) + "{this is not json\n",
        "no_custom_id": _dump(*good, _line(None, model)),
        "duplicate": _dump(*good, _line("a", model)),
        "unknown_model": _dump(good[0], _line("c", "gpt-4o-mini")),
        "bad_url": _dump(_line("a", model, url="/v1/embeddings")),
    }[case]
    err = _upload_error(client, tmp_path / "in.jsonl", text)
    assert err.status_code == 400 and err.code == code
    assert isinstance(err.body, dict) and err.body["line"] == line
    assert f"line {line}:" in err.message
    if case == "duplicate":
        assert "also on line 1" in err.message
    if case == "unknown_model":
        assert model in err.message  # names what is served instead


def test_a_file_over_the_size_limit_is_refused(client: openai.OpenAI, model: str, tmp_path: Path) -> None:
    err = _upload_error(client, tmp_path / "big.jsonl", _dump(*[_line(f"id-{i}", model) for i in range(60)]))
    assert err.status_code == 413 and err.code == "file_too_large" and str(MAX_BYTES) in err.message


def test_an_empty_file_and_a_wrong_purpose_are_refused(client: openai.OpenAI, model: str, tmp_path: Path) -> None:
    assert _upload_error(client, tmp_path / "empty.jsonl", "\n").code == "empty_file"
    path = requests_file(tmp_path / "ok.jsonl", 1, model)
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=path.open("rb"), purpose="fine-tune")
    assert caught.value.code == "invalid_purpose"


def test_create_refuses_a_wrong_endpoint_window_or_file(client: openai.OpenAI, model: str, tmp_path: Path) -> None:
    uploaded = client.files.create(file=requests_file(tmp_path / "ok.jsonl", 2, model).open("rb"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/completions", completion_window="24h")
    assert caught.value.code == "mismatched_endpoint" and "line 1" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    assert caught.value.code == "invalid_endpoint"
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                              completion_window="1h")  # type: ignore[arg-type]
    assert "completion_window" in caught.value.message
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")


@pytest.mark.parametrize(("args", "says"), [
    (["--upstream", "gateway:8000"], "is not an http(s) URL"),
    (["--upstream", "http://127.0.0.1:9", "--api-key-file", "/nonexistent/keys"], "--api-key-file /nonexistent/keys"),
    (["--upstream", "http://127.0.0.1:9", "--max-inflight", "0"], "--max-inflight 0: must be at least 1"),
    (["--upstream", "http://127.0.0.1:9", "--state", "postgresql://nobody@127.0.0.1:1/none"],
     "--state: cannot connect to the batch database"),
])
def test_bad_service_flags_exit_2_with_a_message(tmp_path: Path, args: list[str], says: str) -> None:
    result = subprocess.run([sys.executable, "-m", "llmrack", "batch", "serve", "--state", str(tmp_path), *args],
                            check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert says in result.stderr and "Traceback" not in result.stderr
