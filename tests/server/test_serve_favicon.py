"""`/favicon.ico` is a real icon, not a 404 (browsers request it with every playground visit)."""

import httpx
from serverkit import live_server

from starchat.server import ServerSettings, create_app


def test_favicon_is_an_ico_even_with_an_api_key(tiny_engine):
    app = create_app(tiny_engine, ServerSettings(api_key="s3cret"))
    with live_server(app) as url:
        r = httpx.get(url + "/favicon.ico")
        assert r.status_code == 200 and r.headers["content-type"] == "image/x-icon"
        assert r.content[:4] == b"\x00\x00\x01\x00"  # the ICO header: reserved 0, type 1 (icon)
        assert int.from_bytes(r.content[4:6], "little") >= 1  # at least one image in it
        assert "max-age" in r.headers["cache-control"]
