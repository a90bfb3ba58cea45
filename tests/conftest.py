"""Suite-wide settings.

NNR_REQUIRE_PEERS=1 (set by .ci/run) turns every skip into a failure: a test that skips because a
package, the reference NNCodec or a data set is missing would otherwise let a run look green while
it tested nothing. `python -m nnr.testenv` installs all of them. The one skip that stays a skip is
a trellis kernel the CPU cannot run (AVX-512 on an AVX2 machine): no install brings it.
"""
import os

import pytest

REQUIRE_PEERS = os.environ.get("NNR_REQUIRE_PEERS", "") not in ("", "0")
HARDWARE_SKIPS = ("this CPU does not run",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (REQUIRE_PEERS and report.skipped) or hasattr(report, "wasxfail"):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if any(allowed in reason for allowed in HARDWARE_SKIPS):
        return
    report.outcome = "failed"
    report.longrepr = (f"skipped, but NNR_REQUIRE_PEERS is set: {reason}\n"
                       "(python -m nnr.testenv installs the test peers)")


def pytest_report_header(config):
    return "NNR_REQUIRE_PEERS: skips for missing packages or peers fail" if REQUIRE_PEERS else None
