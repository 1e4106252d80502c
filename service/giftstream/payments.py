"""The simulated payment provider of dev mode: a store receipt decides the outcome.

Receipts starting `test-decline`, `test-fraud` and `test-parental` are refused with that reason;
`test-late` times out and settles (paid) later; every other receipt is paid at once.
Without --dev there is no provider: every recharge is declined.
"""

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    PAID = "paid"
    DECLINED = "declined"
    LATE = "late"


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: Outcome
    reason: str = ""


DECLINES = {
    "test-decline": "the card was declined by its bank",
    "test-fraud": "the bank blocked the payment as suspected fraud",
    "test-parental": "parental controls on this device do not allow purchases",
}


def simulated_verdict(receipt: str) -> Verdict:
    for prefix, reason in DECLINES.items():
        if receipt.startswith(prefix):
            return Verdict(Outcome.DECLINED, reason)
    if receipt.startswith("test-late"):
        return Verdict(Outcome.LATE, "the payment provider did not answer in time")
    return Verdict(Outcome.PAID)


def no_provider_verdict(receipt: str) -> Verdict:
    return Verdict(Outcome.DECLINED, "no payment provider is configured on this server")
