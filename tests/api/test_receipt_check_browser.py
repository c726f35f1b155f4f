"""The public receipt check in a real browser (Debian's headless Chromium through Selenium), as a
person holding the paper would reach it: the QR code printed on an issued slip is read back from
the rendered page (zbarimg), that address is opened, the facts show in Vietnamese, and the
slip's PDF is chosen in the page's file input and checked. Screenshots go to test-artifacts/web/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.api.browser_support import browser, csp_refusals, serving, shot  # noqa: F401  (fixture)
from tests.api.test_receipts_api import body
from tests.conftest import Service
from tests.loopback import free_port
from tests.qr_support import pdf_qr_text
from tests.signing.test_pdf_signing import flip_byte_in_signed_range


@pytest.fixture
def live(db_url: str) -> Iterator[Service]:
    # The port first: the QR code on a slip encodes the public base URL, which must be this server.
    port = free_port()
    svc = Service(db_url, secure_cookies=False, public_base_url=f"http://127.0.0.1:{port}")
    with serving(svc.app, port):
        svc.base = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
        yield svc
    svc.close()


def _submit(driver: Any, path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "file").send_keys(str(path))
    old = driver.find_element(By.TAG_NAME, "html")
    driver.find_element(By.ID, "submit").click()
    wait = WebDriverWait(driver, 30)
    wait.until(lambda d: d.find_elements(By.ID, "verdict") and d.find_element(By.TAG_NAME, "html") != old)
    wait.until(lambda d: d.execute_script("return document.readyState") == "complete")


def test_a_scanned_slip_opens_its_check_and_the_pdf_is_found_genuine(
    live: Any,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    if not live.base.startswith("http://127.0.0.1"):
        pytest.fail("the browser test only ever talks to the loopback")
    from selenium.webdriver.common.by import By

    issued = live.client.post("/v1/receipts", json=body(), headers=live.auth("receipts:issue"))
    assert issued.status_code == 201, issued.text
    code = issued.json()["code"]
    pdf = live.client.get(f"/v1/receipts/{code}/pdf", headers=live.auth("receipts:read")).content
    address = pdf_qr_text(pdf, tmp_path)
    assert address == f"{live.base}/r/{code}"

    browser.get(address)
    assert browser.title.startswith("Tra cứu giấy tiếp nhận hồ sơ")
    assert browser.find_element(By.ID, "status").text == "Mã hồ sơ này do Hệ thống thông tin một cửa điện tử cấp."
    assert browser.find_element(By.ID, "code").text == code
    assert "Bảo hiểm xã hội Thành phố Hồ Chí Minh" in browser.find_element(By.ID, "unit").text
    assert browser.find_element(By.ID, "state").text == "Còn hiệu lực"
    page = browser.find_element(By.TAG_NAME, "body").text
    assert body()["applicant"]["name"] not in page and body()["applicant"]["id_number"] not in page
    shot(browser, "20-receipt-check-vi")

    genuine = tmp_path / "giay-tiep-nhan.pdf"
    genuine.write_bytes(pdf)
    _submit(browser, genuine)
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.get_attribute("data-verdict") == "genuine"
    assert "Đúng là giấy tiếp nhận do hệ thống cấp cho mã này, không bị sửa đổi." in verdict.text
    shot(browser, "21-receipt-check-genuine")

    altered = tmp_path / "giay-da-sua.pdf"
    altered.write_bytes(flip_byte_in_signed_range(pdf))
    _submit(browser, altered)
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.get_attribute("data-verdict") == "altered"
    assert "Tệp này đã bị sửa đổi" in verdict.text
    shot(browser, "22-receipt-check-altered")

    assert csp_refusals(browser) == []
