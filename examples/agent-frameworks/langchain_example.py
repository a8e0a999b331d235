"""LangChain: the MCP adapters turn the server's tools into LangChain tools.

Hand `tools` to any LangChain or LangGraph agent (e.g. `create_agent(model, tools)`);
here they are invoked directly, so no LLM is needed.
"""

import asyncio
import json

from langchain_mcp_adapters.client import MultiServerMCPClient
from langchain_mcp_adapters.tools import load_mcp_tools

from common import ARGS, SERVER, TOOLS, summarise


async def main() -> None:
    client = MultiServerMCPClient(
        {"bigid": {"transport": "stdio", "command": SERVER, "args": ARGS}}
    )
    # One session, so one server process (and its token cache) serves every
    # call; `await client.get_tools()` alone starts the server once per call.
    async with client.session("bigid") as session:
        tools = {tool.name: tool for tool in await load_mcp_tools(session)}
        print("tools:", sorted(tools))
        assert set(tools) == TOOLS, tools
        for name in sorted(TOOLS):
            # Arguments left out: the demo's credentials are configured defaults.
            content = await tools[name].ainvoke({})
            text = content if isinstance(content, str) else "".join(
                block.get("text", "") if isinstance(block, dict) else str(block) for block in content
            )
            print(summarise(name, json.loads(text)))


asyncio.run(main())
