"""What a browser gets: the dashboard at / and Swagger UI at /docs, every asset from the app itself;
any other client gets JSON, and a path nothing serves a JSON 404 naming what exists."""

import posixpath
import re

import pytest

from service.web import DASHBOARD

BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
EXTERNAL = re.compile(r"""["'(]\s*(?:https?:)?//""")  # an absolute or protocol-relative URL in an attribute or string


def test_root_is_the_dashboard_for_a_browser(api):
    page = api.client.get("/", headers=BROWSER)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert not EXTERNAL.search(page.text)
    assets = re.findall(r'(?:src|href)="(dashboard/[^"]+)"', page.text)
    assert {"dashboard/app.js", "dashboard/style.css", "dashboard/vendor/uplot/uPlot.iife.min.js"} <= set(assets)
    for asset in assets:
        assert api.client.get(f"/{asset}").status_code == 200, asset


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
def test_root_without_html_is_a_json_404_naming_what_exists(api, accept):
    answer = api.client.get("/", headers={"Accept": accept} if accept else {})
    assert_names_what_exists(answer, "/")


@pytest.mark.parametrize("path", ["/nothing", "/v1/nothing", "/v1/fine_tuning/nothing/here", "/dashboard/missing.js"])
def test_a_path_nothing_serves_is_a_json_404_naming_what_exists(api, path):
    assert_names_what_exists(api.client.get(path, headers=BROWSER), path)


def assert_names_what_exists(answer, path):
    assert answer.status_code == 404 and answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["code"] == "not_found" and error["type"] == "invalid_request_error"
    assert f"nothing at '{path}':" in error["message"]
    for place in ("/v1/fine_tuning/jobs", "/v1/files", "/v1/models", "/docs", "dashboard at /"):
        assert place in error["message"]


def test_an_api_object_that_does_not_exist_keeps_its_own_404(api):
    error = api.client.get("/v1/files/file-missing", headers=api.alice).json()["error"]
    assert error["code"] == "file_not_found" and "file-missing" in error["message"]


def test_docs_load_swagger_ui_from_the_app_itself(api):
    page = api.client.get("/docs")
    assert page.status_code == 200 and not EXTERNAL.search(page.text)
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    for asset in assets:
        served = api.client.get(asset)
        assert served.status_code == 200 and len(served.content) > 1000, asset
    assert "SwaggerUIBundle" in api.client.get("/docs/assets/swagger-ui-bundle.js").text
    assert "url: '/openapi.json'" in page.text and api.client.get("/openapi.json").status_code == 200


def test_every_dashboard_module_is_local_and_every_vendored_script_has_its_licence(api):
    modules, seen = ["app.js"], set()
    while modules:
        module = modules.pop()
        if module in seen:
            continue
        seen.add(module)
        source = api.client.get(f"/dashboard/{module}")
        assert source.status_code == 200 and "javascript" in source.headers["content-type"], module
        assert not EXTERNAL.search(source.text), module
        imports = re.findall(r'from "(\.{1,2}/[^"]+)"', source.text)
        modules += [posixpath.normpath(posixpath.join(posixpath.dirname(module), found)) for found in imports]
    assert {"app.js", "api.js", "chart.js", "pages/job.js", "pages/new-job.js"} <= seen
    for script in (DASHBOARD / "vendor").rglob("*.js"):
        assert (script.parent / "LICENSE").exists(), script
