"""The Pulumi program run once per stack file, shared by the infra tests."""

from __future__ import annotations

import pytest
from pulumi_harness import STACKS, Run, run_program, stack_config


@pytest.fixture(scope="session", params=list(STACKS))
def run(request) -> tuple[str, Run]:
    stack = request.param
    return stack, run_program(stack, stack_config(STACKS[stack]))
