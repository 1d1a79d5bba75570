"""Every command and code block of the "circuits" pages (tests/docs_harness.py) runs as printed."""

import pytest

from docs_harness import run_group


@pytest.mark.slow
def test_every_command_of_these_pages_runs_as_printed(tmp_path_factory):
    run_group("circuits", tmp_path_factory)
