"""get_weather through a real kernel, against local servers serving Open-Meteo-shaped responses."""

from __future__ import annotations

import json

import pytest

import qaqnuz_pack_weather
from qaqnuz import ConfigError
from qaqnuz_pack_http import REFUSED_ADDRESS
from qaqnuz_pack_weather import UNKNOWN_CITY, WeatherSettings

pytestmark = pytest.mark.anyio


def weather_config(geocoding_url: str, forecast_url: str, extra: str = "allow_private = true") -> str:
    return f"""\
[brands.acme]
plan = "growth"
roles = {{ viewer = ["weather.read"] }}
tools.get_weather = {{ exposable = true }}

[packs.weather]
type = "weather"
geocoding_url = "{geocoding_url}"
forecast_url = "{forecast_url}"
{extra}
"""


async def call(qaqnuz_kernel, qaqnuz_client, text: str, city: str, mode: str = "auto"):
    kernel = await qaqnuz_kernel(text, plugins=[qaqnuz_pack_weather])
    key, _ = await kernel.keys.mint(brand="acme", scopes=["weather.read"], name="t")
    async with qaqnuz_client(kernel, key, mode=mode) as client:
        listed = await client.list_tools()
        result = await client.call_tool("get_weather", {"city": city})
    assert [t.name for t in listed.tools] == ["get_weather"]
    return result


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_weather_for_a_known_city(qaqnuz_kernel, qaqnuz_client, geocoding, forecast, mode):
    result = await call(qaqnuz_kernel, qaqnuz_client, weather_config(geocoding.url, forecast.url), "Berlin", mode)
    assert not result.is_error, result.structured_content
    assert json.loads(result.content[0].text) == {
        "place": "Berlin",
        "region": "Land Berlin",
        "country": "Germany",
        "latitude": 52.52437,
        "longitude": 13.41053,
        "time": "2024-06-01T14:15",
        "timezone": "Europe/Berlin",
        "temperature": 21.4,
        "temperature_unit": "°C",
        "wind_speed": 11.9,
        "wind_speed_unit": "km/h",
        "weather_code": 3,
        "conditions": "overcast",
    }
    [geo] = geocoding.requests
    assert geo["path"] == "/v1/search"
    assert geo["query"] == {"name": "Berlin", "count": "1", "language": "en", "format": "json"}
    [fc] = forecast.requests
    assert fc["path"] == "/v1/forecast"
    assert fc["query"] == {
        "latitude": "52.52437",
        "longitude": "13.41053",
        "current": "temperature_2m,wind_speed_10m,weather_code",
        "timezone": "auto",
    }


async def test_units_and_a_non_ascii_city_name(qaqnuz_kernel, qaqnuz_client, geocoding, forecast):
    extra = 'allow_private = true\ntemperature_unit = "fahrenheit"\nwind_speed_unit = "mph"\nlanguage = "de"'
    result = await call(qaqnuz_kernel, qaqnuz_client, weather_config(geocoding.url, forecast.url, extra), "Zürich")
    data = result.structured_content["data"]
    assert (data["place"], data["temperature"], data["temperature_unit"]) == ("Zürich", 64.2, "°F")
    assert data["conditions"] == "slight rain"
    assert "name=Z%C3%BCrich" in geocoding.requests[0]["target"]  # encoded by httpx, never pasted raw
    assert geocoding.requests[0]["query"]["language"] == "de"
    assert forecast.requests[0]["query"]["temperature_unit"] == "fahrenheit"
    assert forecast.requests[0]["query"]["wind_speed_unit"] == "mph"


async def test_unknown_city_is_terminal_with_a_clear_text(qaqnuz_kernel, qaqnuz_client, geocoding, forecast):
    result = await call(qaqnuz_kernel, qaqnuz_client, weather_config(geocoding.url, forecast.url), "Atlantis")
    assert result.is_error
    assert result.structured_content["error_class"] == "terminal"
    assert result.structured_content["sanitized_error"] == UNKNOWN_CITY
    assert "Atlantis" not in UNKNOWN_CITY
    assert forecast.requests == []  # no forecast without a place


async def test_hostile_city_stays_one_query_value(qaqnuz_kernel, qaqnuz_client, geocoding, forecast):
    hostile = "Berlin&count=100&name=x/../../admin#frag"
    result = await call(qaqnuz_kernel, qaqnuz_client, weather_config(geocoding.url, forecast.url), hostile)
    assert result.structured_content["sanitized_error"] == UNKNOWN_CITY  # looked up literally, matched nothing
    assert geocoding.requests[0]["path"] == "/v1/search"
    assert geocoding.requests[0]["query"]["name"] == hostile
    assert geocoding.requests[0]["query"]["count"] == "1"


async def test_upstream_failures_are_dependency(qaqnuz_kernel, qaqnuz_client, geocoding, forecast):
    config = weather_config(geocoding.url, forecast.url)
    down = await call(qaqnuz_kernel, qaqnuz_client, config, "Downville")  # forecast answers 500
    broken = await call(qaqnuz_kernel, qaqnuz_client, config, "Brokenville")  # result without coordinates
    for result in (down, broken):
        assert result.structured_content["error_class"] == "dependency"
        assert "/srv/forecast" not in result.content[0].text


async def test_connection_refused_is_dependency(qaqnuz_kernel, qaqnuz_client, geocoding):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = weather_config(f"http://127.0.0.1:{port}", geocoding.url)
    result = await call(qaqnuz_kernel, qaqnuz_client, config, "Berlin")
    assert result.structured_content["error_class"] == "dependency"


async def test_private_addresses_are_refused_by_default(qaqnuz_kernel, qaqnuz_client, geocoding, forecast):
    result = await call(qaqnuz_kernel, qaqnuz_client, weather_config(geocoding.url, forecast.url, ""), "Berlin")
    assert result.structured_content["error_class"] == "terminal"
    assert result.structured_content["sanitized_error"] == REFUSED_ADDRESS
    assert geocoding.requests == [] and forecast.requests == []


def test_defaults_point_at_open_meteo():
    settings = WeatherSettings()
    assert settings.geocoding_url == "https://geocoding-api.open-meteo.com"
    assert settings.forecast_url == "https://api.open-meteo.com"
    assert settings.allow_private is False and settings.scope == "weather.read"


async def test_config_errors_are_located(qaqnuz_kernel):
    text = weather_config("ftp://geo.example.com", "https://api.example.com", 'timeout = "never"\nlanguage = "e n"')
    with pytest.raises(ConfigError) as caught:
        await qaqnuz_kernel(text, plugins=[qaqnuz_pack_weather])
    problems = "\n".join(caught.value.problems)
    assert "[packs.weather] geocoding_url: must be an http:// or https:// URL" in problems
    assert "[packs.weather] timeout: 'never' is not a duration" in problems
    assert "[packs.weather] language:" in problems
