"""What a worker process holds while it runs: settings, the store client, the loaded data, the
hub, and the services the edges call."""

from dataclasses import dataclass

from giftstream.chests import Chests
from giftstream.domain.catalog import Catalog
from giftstream.domain.economy import Economy
from giftstream.gifting import Gifting
from giftstream.realtime.hub import Hub
from giftstream.realtime.limits import ConnectionLimits
from giftstream.settings import Settings
from giftstream.store.connection import Redis
from giftstream.store.ledger import Ledger
from giftstream.tokens import Keyring
from giftstream.wallet import Wallet


@dataclass
class Runtime:
    settings: Settings
    redis: Redis
    catalog: Catalog
    economy: Economy
    secret: Keyring
    hub: Hub
    gifting: Gifting
    wallet: Wallet
    chests: Chests
    limits: ConnectionLimits
    ledger: Ledger
