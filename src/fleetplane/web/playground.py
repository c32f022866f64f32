"""The API playground (placeholder router; the page itself lives in web/static)."""

from fastapi import APIRouter

router = APIRouter(include_in_schema=False)
