"""The web console: its static files (``static_response``), and the pages in a real headless
Chromium (Debian's ``chromium`` driven by Playwright) against ``facebank serve``.

Screenshots of each page go to ``artifacts/console/`` (gitignored; CI keeps them as artefacts)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support import FACES, ROOT, Server, dev_people, require_faces

from facebank.console import CSP, files, static_response

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "artifacts" / "console"


# --- static files


def test_root_and_console_paths_serve_the_page_with_a_strict_policy():
    for path in ("/", "/console/", "/console/index.html", "/?x=1", "", "index.html"):
        status, headers, body = static_response(path)
        assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert b'<script type="module" src="/console/app.js">' in body
        assert headers["Content-Security-Policy"] == CSP and "script-src 'self'" in CSP and "unsafe" not in CSP
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_content_types():
    expected = {".js": "text/javascript", ".mjs": "text/javascript", ".css": "text/css", ".txt": "text/plain"}
    for name in files():
        suffix = "." + name.rsplit(".", 1)[-1]
        if suffix in expected:
            for path in (f"/console/{name}", name):
                status, headers, _ = static_response(path)
                assert status == 200 and headers["Content-Type"].startswith(expected[suffix]), name
    assert "vendor/aws4fetch.mjs" in files() and "vendor/LICENSE-aws4fetch.txt" in files()


@pytest.mark.parametrize(
    "path",
    [
        "/console/../__init__.py",
        "/console/%2e%2e/__init__.py",
        "/console/..%2f__init__.py",
        "/console//etc/passwd",
        "/console/vendor/../../__init__.py",
        "/console/__init__.py",
        "/console/nope.js",
        "/etc/passwd",
        "/console/vendor",
        "/console/static/index.html",
        "../__init__.py",
        "vendor/../../cli.py",
    ],
)
def test_nothing_outside_the_static_files_is_served(path):
    status, headers, body = static_response(path)
    assert (status, body) == (404, b"Not Found\n") and headers["Content-Type"].startswith("text/plain")


# --- in a browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extra")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        chromium.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def photo(path: str, name: str) -> dict:
    return {"name": name, "mimeType": "image/jpeg", "buffer": (FACES / path).read_bytes()}


def test_create_index_search_in_the_console(browser, server):
    from playwright.sync_api import expect

    require_faces()
    person, paths = next((p, paths) for p, paths in dev_people().items() if len(paths) >= 2)
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",  # the browser logs each 4xx answer too: only the API error it expects (shown) passes
        lambda message: message.type == "error" and "status of 400" not in message.text and errors.append(message.text),
    )

    page.goto(f"{server.url}/")
    page.get_by_label("New collection").fill("console-tour")
    page.get_by_role("button", name="Create", exact=True).click()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name="console-tour"))
    expect(row).to_contain_text("0")  # no faces yet
    page.get_by_label("New collection").fill("console-tour")  # again: the API's own error, shown as is
    page.get_by_role("button", name="Create", exact=True).click()
    expect(page.locator("#status")).to_contain_text("ResourceAlreadyExistsException")

    page.get_by_role("link", name="Try it").click()
    expect(page.get_by_role("heading", name="Try it")).to_be_visible()  # not the last page's "New collection"
    page.get_by_label("Collection").select_option("console-tour")
    page.locator('input[name="Photo A"]').set_input_files(photo(paths[0], f"{person}-1.jpg"))
    page.get_by_role("button", name="IndexFaces (A)").click()
    expect(page.locator("#result h2")).to_have_text("IndexFaces: 1 indexed, 0 not indexed")
    expect(page.locator("#result .box.match")).to_have_count(1)
    shot(page, "index-faces")

    page.locator('input[name="Photo A"]').set_input_files(photo(paths[1], f"{person}-2.jpg"))
    page.get_by_role("button", name="SearchFacesByImage (A)").click()
    expect(page.locator("#result h2")).to_have_text("SearchFacesByImage: 1 match(es)")
    match = page.locator("#result tbody tr")
    expect(match).to_contain_text(f"{person}-1.jpg")
    assert float(match.locator("td").first.inner_text()) >= 80  # the collection's default threshold
    expect(page.locator("#result .box.searched")).to_have_count(1)
    shot(page, "search-faces-by-image")

    page.get_by_role("button", name="DetectFaces (A)").click()
    expect(page.locator("#result h2")).to_have_text("DetectFaces: 1 face(s)")
    assert page.locator("#result .dot").count() > 0  # landmarks drawn
    shot(page, "detect-faces")

    page.get_by_role("link", name="Collections").click()
    expect(page.get_by_role("row").filter(has_text="console-tour")).to_contain_text("1")
    shot(page, "collections")
    page.get_by_role("link", name="console-tour").click()
    expect(page.locator("#faces tbody tr")).to_have_count(1)
    expect(page.locator("#faces")).to_contain_text(f"{person}-1.jpg")
    page.get_by_label("New user").fill("user-1")
    page.get_by_role("button", name="Create user").click()
    expect(page.locator("#users tbody tr")).to_contain_text("user-1")
    page.locator("#faces tbody input[type=checkbox]").check()
    page.get_by_role("button", name="Associate selected faces").click()
    expect(page.locator("#faces tbody tr")).to_contain_text("user-1")  # the face's UserId
    shot(page, "collection")

    page.get_by_role("link", name="Try it").click()
    expect(page.get_by_role("heading", name="Try it")).to_be_visible()  # not the last page's "New collection"
    page.get_by_label("Collection").select_option("console-tour")
    page.locator('input[name="Photo A"]').set_input_files(photo(paths[1], f"{person}-2.jpg"))
    page.locator('input[name="Photo B"]').set_input_files(photo(paths[0], f"{person}-1.jpg"))
    # A user's similarity maps apart from a face's (docs/users.md) and may fall under the default 80.
    page.get_by_label("Match threshold").fill("50")
    page.get_by_role("button", name="SearchUsersByImage (A)").click()
    expect(page.locator("#result h2")).to_have_text("SearchUsersByImage: 1 match(es)")
    expect(page.locator("#result tbody tr")).to_contain_text("user-1")
    page.get_by_role("button", name="CompareFaces (A with B)").click()
    expect(page.locator("#result h2")).to_have_text("CompareFaces: 1 match(es), 0 unmatched")
    expect(page.locator("#result .box.match")).to_have_count(1)
    for kind in ("searched", "match"):  # each face's box is drawn on its photo, inside it
        box = page.locator(f"#result .box.{kind}").bounding_box()
        img = page.locator(f"#result .photo:has(.box.{kind}) img").bounding_box()
        assert img["x"] <= box["x"] and box["x"] + box["width"] <= img["x"] + img["width"] + 1
        assert img["y"] <= box["y"] and box["y"] + box["height"] <= img["y"] + img["height"] + 1
    shot(page, "compare-faces")

    page.get_by_role("link", name="Video jobs").click()
    expect(page.get_by_role("heading", name="Video jobs")).to_be_visible()
    shot(page, "video-jobs")

    # Deleting: the user, the face, then the collection (after its confirmation dialog).
    page.goto(f"{server.url}/#collection/console-tour")
    page.locator("#users tbody tr").get_by_role("button", name="Delete").click()
    expect(page.locator("#users")).to_contain_text("No users.")
    page.locator("#faces tbody tr").get_by_role("button", name="Delete").click()
    expect(page.locator("#faces")).to_contain_text("No faces on this page.")
    page.get_by_role("link", name="All collections").click()
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("row").filter(has_text="console-tour").get_by_role("button", name="Delete").click()
    expect(page.get_by_role("link", name="console-tour")).to_have_count(0)
    assert "console-tour" not in server.client().list_collections()["CollectionIds"]
    assert errors == []
    page.close()


def test_keys_are_asked_for_and_requests_signed_in_the_browser(browser, model_env, tmp_path):
    """With FACEBANK_ACCESS_KEY_ID set every call must be signed: the console asks for the pair,
    signs in the browser and never sends the secret."""
    from playwright.sync_api import expect

    key, secret = "AKIACONSOLETEST", "console-secret-never-sent"
    env = {**model_env, "FACEBANK_ACCESS_KEY_ID": key, "FACEBANK_SECRET_ACCESS_KEY": secret}
    server = Server(env, tmp_path / "data")
    page = browser.new_page()
    sent: list[str] = []
    page.on("request", lambda request: sent.append(f"{request.url} {request.headers} {request.post_data or ''}"))
    try:
        page.goto(f"{server.url}/")
        expect(page.get_by_role("heading", name="Keys")).to_be_visible()  # unsigned call refused
        page.get_by_label("Access key id").fill(key)
        page.get_by_label("Secret access key").fill(secret)
        page.get_by_role("button", name="Use these keys").click()
        expect(page.get_by_text("No collections yet.")).to_be_visible()  # a signed ListCollections
        shot(page, "keys")
        page.get_by_label("New collection").fill("signed")
        page.get_by_role("button", name="Create", exact=True).click()
        expect(page.get_by_role("link", name="signed")).to_be_visible()
    finally:
        page.close()
        server.stop()
    assert any(f"Credential={key}/" in request for request in sent)
    assert not any(secret in request for request in sent)


def test_a_video_job_started_in_the_console_ends_in_a_timeline(browser, server, s3_server):
    """StartFaceSearch from the form on a clip in S3 (moto); the job page follows it to SUCCEEDED
    and draws who is seen when: the indexed person, only while the clip shows them."""
    import boto3
    from playwright.sync_api import expect

    pytest.importorskip("av", reason="PyAV makes the clip")
    from video_clips import Shown, make_clip

    require_faces()
    person, paths = next((p, paths) for p, paths in dev_people().items() if len(paths) >= 2)
    rekognition = server.client()
    rekognition.create_collection(CollectionId="console-video")
    image = (FACES / paths[1]).read_bytes()
    rekognition.index_faces(CollectionId="console-video", Image={"Bytes": image}, ExternalImageId=person)
    s3 = boto3.client(
        "s3", endpoint_url=s3_server, region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t"
    )
    s3.create_bucket(Bucket="console-videos")
    clip = make_clip([Shown(FACES / paths[0], 200, 60, 1000, 3000)], 4000)
    s3.put_object(Bucket="console-videos", Key="clip.mp4", Body=clip)

    page = browser.new_page()
    page.goto(f"{server.url}/#videos")
    expect(page.get_by_role("heading", name="Video jobs")).to_be_visible()
    page.get_by_label("Start").select_option("FaceSearch")
    page.locator('input[name="bucket"]').fill("console-videos")
    page.locator('input[name="name"]').fill("clip.mp4")
    page.get_by_label("collection (FaceSearch)").select_option("console-video")
    page.get_by_role("button", name="Start", exact=True).click()
    expect(page.get_by_text("SUCCEEDED")).to_be_visible(timeout=120_000)  # the job runs in serve's pool
    rows = page.locator(".timeline .row")
    expect(rows).to_have_count(1)
    expect(rows.locator(".who")).to_contain_text(person)
    seconds = [float(t.get_attribute("title").split()[0]) for t in rows.locator(".tick").all()]
    assert len(seconds) >= 4 and all(1.0 <= s <= 3.0 for s in seconds), seconds
    shot(page, "video-job")
    page.goto(f"{server.url}/#videos")
    expect(page.locator("tbody tr").first).to_contain_text("SUCCEEDED")  # remembered by this browser
    page.close()
