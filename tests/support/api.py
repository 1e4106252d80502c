"""The HTTP API, as a client program uses it."""

import re

import httpx

from .frames import Frame
from .users import User, bearer


class Api:
    """The HTTP API, as a client program uses it."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=10.0)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "Api":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def user(self, coins: int = 0, region: str = "US", role: str = "viewer") -> User:
        r = await self.http.post(
            "/v1/dev/users",
            json={"name": f"t-{role}", "region": region, "role": role, "coins": coins},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        return User(body["user"], body["token"])

    async def open_room(self, host: User) -> str:
        r = await self.http.post("/v1/rooms", headers=bearer(host))
        assert r.status_code == 200, r.text
        room: str = r.json()["room"]
        return room

    async def wallet(self, user: User) -> Frame:
        r = await self.http.get("/v1/wallet", headers=bearer(user))
        assert r.status_code == 200, r.text
        body: Frame = r.json()
        return body


async def metric(api: Api, name: str) -> float:
    """A sample of the server's /metrics (0 when absent)."""
    text = (await api.http.get("/metrics")).text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0
