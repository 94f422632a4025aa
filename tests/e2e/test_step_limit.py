"""The e2e clients' per-step time limit: a call that hangs or loops fails fast, naming the step."""

from __future__ import annotations

import json
import os
import subprocess
import time

HANGING_SCRIPT = """
import { limited, run } from './lib/common.mjs';
const sdk = limited({ login: () => new Promise(() => {}), now: () => 1 }, 'sdk');
await run(async () => ({ now: sdk.now(), never: await sdk.login() }));
"""


def test_a_hanging_client_call_fails_within_the_step_limit(node_project):
    started = time.monotonic()
    result = subprocess.run(["node", "--input-type=module", "-e", HANGING_SCRIPT], cwd=node_project,
                            env={**os.environ, "E2E_STEP_TIMEOUT_MS": "300"}, capture_output=True, text=True,
                            timeout=30)
    elapsed = time.monotonic() - started
    output = json.loads(result.stdout.strip().splitlines()[-1])
    assert result.returncode == 1
    assert output["ok"] is False and output["name"] == "StepTimeoutError" and output["step"] == "sdk.login"
    assert output["error"] == 'step "sdk.login" did not finish within 300 ms'
    assert elapsed < 10
