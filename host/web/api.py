"""placeholder"""
from aiohttp import web


def add_routes(app: web.Application) -> None:
    """Mount the fleet API's routes."""
