"""A new user's MCP client, headless: the official Python SDK's OAuth client
discovers bigid-auth-mcp's authorization server from its 401, registers
itself (dynamic client registration), runs authorization code + PKCE against
the test authorization server (logging in and consenting through its
devInteractions pages over HTTP, with a cookie jar), then calls both tools.

Usage: client.py MCP_URL LOGIN
Prints one JSON object on stdout: the tools listed, each call's result, and
the issuer the client was sent to. Exits non-zero on any failure.
"""

import asyncio
import json
import sys
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp.client.auth import AuthorizationCodeResult, OAuthClientProvider
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

REDIRECT_URI = "http://127.0.0.1:1/callback"  # never contacted: the code is read from the redirect


class MemoryStorage:
    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


class HeadlessBrowser:
    """Plays the user: follows the authorization redirects, submits the
    login and consent forms, and stops at the redirect back to the client."""

    def __init__(self, login: str):
        self.login = login
        self.result: AuthorizationCodeResult | None = None
        self.visited: list[str] = []

    async def redirect(self, authorization_url: str) -> None:
        async with httpx2.AsyncClient(follow_redirects=False, timeout=20) as browser:
            url = authorization_url
            response = await browser.get(url)
            for _ in range(12):
                if response.status_code in (301, 302, 303, 307, 308):
                    url = urljoin(url, response.headers["location"])
                    if url.startswith(REDIRECT_URI):
                        query = parse_qs(urlparse(url).query)
                        if "error" in query:
                            raise RuntimeError(f"authorization failed: {query}")
                        self.result = AuthorizationCodeResult(
                            code=query["code"][0],
                            state=query.get("state", [None])[0],
                            iss=query.get("iss", [None])[0],
                        )
                        return
                    self.visited.append(urlparse(url).path)
                    response = await browser.get(url)
                    continue
                if response.status_code != 200 or "/interaction/" not in url:
                    raise RuntimeError(f"unexpected answer {response.status_code} at {url}")
                # A devInteractions page: the login form, then the consent form.
                prompt = "login" if 'name="login"' in response.text else "consent"
                form = {"prompt": prompt}
                if prompt == "login":
                    form.update({"login": self.login, "password": "any"})
                response = await browser.post(url, data=form)
            raise RuntimeError("too many redirects during authorization")

    async def callback(self) -> AuthorizationCodeResult:
        if self.result is None:
            raise RuntimeError("the authorization redirect never reached the client")
        return self.result


async def main(mcp_url: str, login: str) -> dict:
    browser = HeadlessBrowser(login)
    storage = MemoryStorage()
    auth = OAuthClientProvider(
        server_url=mcp_url,
        client_metadata=OAuthClientMetadata(
            client_name="bigid-auth-mcp end-to-end test",
            redirect_uris=[REDIRECT_URI],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="client_secret_post",
        ),
        storage=storage,
        redirect_handler=browser.redirect,
        callback_handler=browser.callback,
    )
    out: dict = {}
    async with httpx2.AsyncClient(auth=auth, timeout=httpx2.Timeout(30, read=60)) as http:
        async with streamable_http_client(mcp_url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = await session.list_tools()
                out["tools"] = sorted(t.name for t in tools.tools)
                for name in ("create_session", "refresh_access_token"):
                    result = await session.call_tool(name, {})
                    out[name] = {
                        "isError": bool(result.is_error),
                        "structured": result.structured_content,
                    }
    out["registered"] = storage.client_info is not None
    out["visited"] = browser.visited
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
