"""qaqnuz-pack-weather: `get_weather(city)` done properly.

Two requests in the shape of Open-Meteo's public APIs: geocode the city (`GET /v1/search`), then read the
current conditions at its coordinates (`GET /v1/forecast`). Both go through `qaqnuz_pack_http.Upstream`,
so they get the http pack's timeouts, response size cap, SSRF guard (with pinned addresses), bounded
retries and error mapping. The city is only ever a query parameter value, encoded by httpx.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import msgspec

from qaqnuz import (
    ConfigError,
    DependencyError,
    Provider,
    SideEffect,
    TerminalError,
    Tool,
    ToolPackContext,
    hookimpl,
    parse_positive_duration,
)

UNKNOWN_CITY = "No place with that name was found. Check the spelling, or try a nearby larger town."
CURRENT = "temperature_2m,wind_speed_10m,weather_code"

#: WMO weather interpretation codes, as documented by Open-Meteo.
WMO_CODES = {
    0: "clear sky",
    1: "mainly clear",
    2: "partly cloudy",
    3: "overcast",
    45: "fog",
    48: "depositing rime fog",
    51: "light drizzle",
    53: "moderate drizzle",
    55: "dense drizzle",
    56: "light freezing drizzle",
    57: "dense freezing drizzle",
    61: "slight rain",
    63: "moderate rain",
    65: "heavy rain",
    66: "light freezing rain",
    67: "heavy freezing rain",
    71: "slight snowfall",
    73: "moderate snowfall",
    75: "heavy snowfall",
    77: "snow grains",
    80: "slight rain showers",
    81: "moderate rain showers",
    82: "violent rain showers",
    85: "slight snow showers",
    86: "heavy snow showers",
    95: "thunderstorm",
    96: "thunderstorm with slight hail",
    99: "thunderstorm with heavy hail",
}


class WeatherSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[packs.<name>] type = "weather"`."""

    geocoding_url: str = "https://geocoding-api.open-meteo.com"
    forecast_url: str = "https://api.open-meteo.com"
    scope: str = "weather.read"
    language: str = "en"
    temperature_unit: Literal["celsius", "fahrenheit"] = "celsius"
    wind_speed_unit: Literal["kmh", "ms", "mph", "kn"] = "kmh"
    timeout: str = "10s"
    max_response_bytes: int = 256 * 1024
    allow_private: bool = False


class WeatherPack:
    def __init__(self, settings: WeatherSettings, ctx: ToolPackContext) -> None:
        from qaqnuz_pack_http import Upstream, check_base_url  # httpx loads when a pack is built, not at discovery

        where = ctx.where
        problems: list[str] = []
        for field in ("geocoding_url", "forecast_url"):
            check_base_url(getattr(settings, field), f"{where} {field}", problems)
        try:
            timeout = parse_positive_duration(settings.timeout)
        except ValueError as exc:
            problems.append(f"{where} timeout: {exc}")
            timeout = 10.0
        if settings.max_response_bytes < 1024:
            problems.append(f"{where} max_response_bytes: at least 1024")
        if not settings.language.isalpha() or len(settings.language) > 8:
            problems.append(f"{where} language: a language code such as 'en' or 'de'")
        if problems:
            raise ConfigError(problems)
        self.settings = settings
        common: dict[str, Any] = {
            "timeout": timeout,
            "max_response_bytes": settings.max_response_bytes,
            "allow_private": settings.allow_private,
            "logger": ctx.logger,
        }
        self.geocoding = Upstream(settings.geocoding_url, **common)
        self.forecast = Upstream(settings.forecast_url, **common)
        self.tool = Tool(
            name="get_weather",
            description=(
                "Current weather for a city: temperature, wind speed and conditions, with the place that matched."
            ),
            scope=settings.scope,
            side_effect=SideEffect.READ,
            input_schema={
                "type": "object",
                "properties": {
                    "city": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 120,
                        "description": "City or town name, e.g. 'Berlin' or 'São Paulo'.",
                    }
                },
                "required": ["city"],
                "additionalProperties": False,
            },
            handler=self.get_weather,
            timeout_s=2 * timeout + 5,
            max_result_bytes=16 * 1024,
        )

    async def list_tools(self) -> Sequence[Tool]:
        return [self.tool]

    async def aclose(self) -> None:
        await self.geocoding.aclose()
        await self.forecast.aclose()

    async def get_weather(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        city = str(arguments["city"]).strip()
        if not city:
            raise TerminalError("blank city", public=UNKNOWN_CITY)
        found = await self.geocoding.request(
            "GET",
            "/v1/search",
            tool="get_weather",
            params=[("name", city), ("count", "1"), ("language", self.settings.language), ("format", "json")],
        )
        results = found.get("results") if isinstance(found, dict) else None
        if not results:
            raise TerminalError("no geocoding result", public=UNKNOWN_CITY)
        place = results[0] if isinstance(results, list) and isinstance(results[0], dict) else {}
        latitude = _number(place.get("latitude"), 90)
        longitude = _number(place.get("longitude"), 180)
        params = [
            ("latitude", repr(latitude)),
            ("longitude", repr(longitude)),
            ("current", CURRENT),
            ("timezone", "auto"),
        ]
        if self.settings.temperature_unit != "celsius":
            params.append(("temperature_unit", self.settings.temperature_unit))
        if self.settings.wind_speed_unit != "kmh":
            params.append(("wind_speed_unit", self.settings.wind_speed_unit))
        forecast = await self.forecast.request("GET", "/v1/forecast", tool="get_weather", params=params)
        current = forecast.get("current") if isinstance(forecast, dict) else None
        units = (forecast.get("current_units") if isinstance(forecast, dict) else None) or {}
        if not isinstance(current, dict) or not isinstance(units, dict):
            raise DependencyError("forecast response without current conditions")
        code = current.get("weather_code")
        code = int(code) if isinstance(code, int | float) and not isinstance(code, bool) else None
        return {
            "place": _text(place.get("name")) or city,
            "region": _text(place.get("admin1")),
            "country": _text(place.get("country")),
            "latitude": latitude,
            "longitude": longitude,
            "time": _text(current.get("time")),
            "timezone": _text(forecast.get("timezone")),
            "temperature": _number(current.get("temperature_2m"), 1000),
            "temperature_unit": _text(units.get("temperature_2m")),
            "wind_speed": _number(current.get("wind_speed_10m"), 10_000),
            "wind_speed_unit": _text(units.get("wind_speed_10m")),
            "weather_code": code,
            "conditions": WMO_CODES.get(code, "unknown") if code is not None else "unknown",
        }


def _number(value: Any, bound: float) -> float:
    """A finite number within ±bound from an upstream answer, else the upstream is broken (dependency)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise DependencyError("upstream answer is missing a number")
    if abs(value) > bound:
        raise DependencyError("upstream answer has a number out of range")
    return float(value)


def _text(value: Any) -> str | None:
    return value[:200] if isinstance(value, str) else None


def factory(settings: WeatherSettings, ctx: ToolPackContext) -> WeatherPack:
    return WeatherPack(settings, ctx)


@hookimpl
def qaqnuz_tool_providers() -> list[Provider]:
    return [
        Provider(
            "weather",
            factory,
            "Weather pack: get_weather(city) from Open-Meteo-shaped geocoding and forecast APIs.",
            WeatherSettings,
        )
    ]


__all__ = ["UNKNOWN_CITY", "WMO_CODES", "WeatherPack", "WeatherSettings", "factory", "qaqnuz_tool_providers"]
