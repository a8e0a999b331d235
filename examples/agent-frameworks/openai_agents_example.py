"""OpenAI Agents SDK: an MCP server handed to an Agent as `mcp_servers`.

`Runner.run(agent, "...")` would let the model call the tools; here the SDK's
MCP client lists and calls them directly, so no LLM (and no API key) is needed.
"""

import asyncio

from agents import Agent
from agents.mcp import MCPServerStdio

from common import ARGS, SERVER, TOOLS, summarise


async def main() -> None:
    async with MCPServerStdio(
        name="bigid", params={"command": SERVER, "args": ARGS}, cache_tools_list=True
    ) as server:
        agent = Agent(
            name="BigID helper",
            instructions="Get BigID tokens with the bigid tools when asked.",
            mcp_servers=[server],
        )
        tools = {tool.name for tool in await server.list_tools()}
        print("tools:", sorted(tools), "- given to agent", repr(agent.name))
        assert tools == TOOLS, tools
        for name in sorted(TOOLS):
            result = await server.call_tool(name, {})
            assert not result.isError, result
            print(summarise(name, result.structuredContent))


asyncio.run(main())
