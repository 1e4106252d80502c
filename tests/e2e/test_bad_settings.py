"""A wrong setting stops `giftstream serve` before it starts anything, naming the variable."""

from pathlib import Path

import pytest

from support import ServerProcess


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("GIFTSTREAM_DEV", "ture", "GIFTSTREAM_DEV must be a boolean"),
        ("GIFTSTREAM_WORKER", "2", "GIFTSTREAM_WORKER is not a setting"),
    ],
)
def test_serve_with_a_wrong_variable_exits_non_zero_naming_it_without_a_traceback(
    tmp_path: Path, variable: str, value: str, said: str
) -> None:
    server = ServerProcess(redis_url=None, data_dir=tmp_path, env={variable: value})
    with pytest.raises(RuntimeError, match="server exited at start"):
        server.start()
    assert server.wait_exit() != 0
    log = server.log()
    assert said in log
    assert "Traceback" not in log
    # It stopped before starting anything: the embedded store wrote nothing.
    assert not any(tmp_path.iterdir())
