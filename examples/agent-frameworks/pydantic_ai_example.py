"""PydanticAI: the MCP server as a toolset of an Agent.

`agent.run("...")` would let the model call the tools; here the toolset's MCP
client lists and calls them directly, so no LLM is needed.
"""

import asyncio

from fastmcp.client.transports import StdioTransport
from pydantic_ai import Agent
from pydantic_ai.mcp import MCPToolset

from common import ARGS, SERVER, TOOLS, summarise


async def main() -> None:
    bigid = MCPToolset(StdioTransport(command=SERVER, args=ARGS), id="bigid")
    agent = Agent("test", toolsets=[bigid])
    async with agent:
        tools = {tool.name for tool in await bigid.list_tools()}
        print("tools:", sorted(tools))
        assert tools == TOOLS, tools
        for name in sorted(TOOLS):
            result = await bigid.direct_call_tool(name, {})
            print(summarise(name, result))


asyncio.run(main())
