"""The web console in a real browser: Debian's Chromium driven through its
WebDriver (selenium), against a real Cove. The VPCs are built with the AWS
CLI and the jobs with boto3, as a user would; the test watches the pages
change by themselves. Screenshots of every page go to COVE_SCREENSHOTS
(default: /tmp/cove-console-screenshots)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid

import pytest

from conftest import ACCESS_KEY, SECRET_KEY, teardown_vpc
from test_training_jobs import s3_endpoint, training_bucket, training_request, wait_for

CONSOLE = "/_cove/console"
SHOTS = os.environ.get("COVE_SCREENSHOTS", os.path.join(tempfile.gettempdir(), "cove-console-screenshots"))
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


@pytest.fixture(scope="module")
def browser():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("selenium is not installed (tests/requirements.txt)")
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests: install chromium and chromium-driver (.ci/run does)")
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="cove-chromium-")
    # No background connections: the test's traffic stays on loopback.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    driver.set_page_load_timeout(30)
    os.makedirs(SHOTS, exist_ok=True)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def shot(driver, name):
    driver.save_screenshot(os.path.join(SHOTS, f"{name}.png"))


def wait_until(check, timeout=20, what="the page"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # the page may be swapped under the query
            last = e
        time.sleep(0.1)
    raise AssertionError(f"{what} did not show it in {timeout} s (last: {last!r})")


def sign_in(driver, endpoint, secret=SECRET_KEY):
    from selenium.webdriver.common.by import By
    driver.get(f"{endpoint}{CONSOLE}/login")
    driver.find_element(By.ID, "access_key_id").send_keys(ACCESS_KEY)
    driver.find_element(By.ID, "secret_access_key").send_keys(secret)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


@pytest.fixture(scope="module")
def signed_in(browser, cove_server):
    sign_in(browser, cove_server.endpoint)
    wait_until(lambda: browser.title.startswith("VPCs"), what="sign-in")
    return browser


def aws_cli(cove_server, *args):
    aws = shutil.which("aws", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert aws, "the AWS CLI must be installed (tests/requirements.txt)"
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               AWS_DEFAULT_REGION="us-east-1")
    out = subprocess.run([aws, "--endpoint-url", cove_server.endpoint, "--output", "json", *args],
                         env=env, check=True, capture_output=True, text=True, stdin=subprocess.DEVNULL).stdout
    return json.loads(out or "{}")


# Live pages swap their content under the test: what it reads of a page,
# it reads in one script, and what it clicks, it retries.

def node_ids(driver):
    return set(driver.execute_script(
        "return Array.from(document.querySelectorAll('svg [data-id]')).map(e => e.dataset.id)"))


def map_labels(driver):
    """ENI id -> the full text of its line on the map."""
    return driver.execute_script(
        "const out = {}; document.querySelectorAll('svg a[data-id]').forEach("
        "a => { out[a.dataset.id] = a.querySelector('title').textContent; }); return out")


def map_edges(driver):
    return {tuple(e) for e in driver.execute_script(
        "return Array.from(document.querySelectorAll('svg path[data-from]')).map(p => [p.dataset.from, p.dataset.to])")}


def click(driver, css):
    from selenium.webdriver.common.by import By
    wait_until(lambda: driver.find_element(By.CSS_SELECTOR, css).click() or True, what=f"a click on {css}")


def test_the_console_needs_a_sign_in_and_refuses_a_wrong_secret(browser, cove_server):
    from selenium.webdriver.common.by import By
    browser.delete_all_cookies()
    # A browser at Cove's address is sent to the console, and from there to sign in.
    browser.get(f"{cove_server.endpoint}/")
    wait_until(lambda: browser.current_url.endswith(f"{CONSOLE}/login"), what="the sign-in redirect")
    # Without a session, pages and the event stream answer nothing of the account's.
    req = urllib.request.Request(f"{cove_server.endpoint}{CONSOLE}/events")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=5)
    assert refused.value.code == 401
    with urllib.request.urlopen(f"{cove_server.endpoint}{CONSOLE}/login", timeout=5) as login_page:
        assert "script-src 'self'" in login_page.headers["Content-Security-Policy"]
        assert login_page.headers["X-Frame-Options"] == "DENY"
    sign_in(browser, cove_server.endpoint, secret="not-the-secret")
    alert = wait_until(lambda: browser.find_element(By.CSS_SELECTOR, "[role=alert]").text, what="the refusal")
    assert "not valid" in alert
    shot(browser, "01-sign-in-refused")
    sign_in(browser, cove_server.endpoint)
    wait_until(lambda: browser.title.startswith("VPCs"), what="sign-in")
    shot(browser, "02-vpcs")


def test_the_map_shows_every_subnet_gateway_and_endpoint_built_with_the_cli(signed_in, cove_server, ec2):
    from selenium.webdriver.common.by import By
    driver = signed_in
    vpc = aws_cli(cove_server, "ec2", "create-vpc", "--cidr-block", "10.60.0.0/16",
                  "--tag-specifications", "ResourceType=vpc,Tags=[{Key=Name,Value=console-map}]")["Vpc"]["VpcId"]
    try:
        aws_cli(cove_server, "ec2", "modify-vpc-attribute", "--vpc-id", vpc, "--enable-dns-hostnames")
        public = aws_cli(cove_server, "ec2", "create-subnet", "--vpc-id", vpc, "--cidr-block", "10.60.0.0/24",
                         "--availability-zone", "us-east-1a")["Subnet"]["SubnetId"]
        private = aws_cli(cove_server, "ec2", "create-subnet", "--vpc-id", vpc, "--cidr-block", "10.60.1.0/24",
                          "--availability-zone", "us-east-1b")["Subnet"]["SubnetId"]
        igw = aws_cli(cove_server, "ec2", "create-internet-gateway")["InternetGateway"]["InternetGatewayId"]
        aws_cli(cove_server, "ec2", "attach-internet-gateway", "--internet-gateway-id", igw, "--vpc-id", vpc)
        public_rt = aws_cli(cove_server, "ec2", "create-route-table", "--vpc-id", vpc)["RouteTable"]["RouteTableId"]
        aws_cli(cove_server, "ec2", "create-route", "--route-table-id", public_rt,
                "--destination-cidr-block", "0.0.0.0/0", "--gateway-id", igw)
        aws_cli(cove_server, "ec2", "associate-route-table", "--route-table-id", public_rt, "--subnet-id", public)
        eip = aws_cli(cove_server, "ec2", "allocate-address")["AllocationId"]
        nat = aws_cli(cove_server, "ec2", "create-nat-gateway", "--subnet-id", public,
                      "--allocation-id", eip)["NatGateway"]["NatGatewayId"]
        main_rt = aws_cli(cove_server, "ec2", "describe-route-tables", "--filters", f"Name=vpc-id,Values={vpc}",
                          "Name=association.main,Values=true")["RouteTables"][0]["RouteTableId"]
        gateway = aws_cli(cove_server, "ec2", "create-vpc-endpoint", "--vpc-id", vpc, "--service-name",
                          "com.amazonaws.us-east-1.s3", "--route-table-ids", main_rt)["VpcEndpoint"]["VpcEndpointId"]
        interface = aws_cli(cove_server, "ec2", "create-vpc-endpoint", "--vpc-id", vpc, "--vpc-endpoint-type",
                            "Interface", "--service-name", "com.amazonaws.us-east-1.sagemaker.api",
                            "--subnet-ids", private, "--private-dns-enabled")["VpcEndpoint"]["VpcEndpointId"]

        driver.get(f"{cove_server.endpoint}{CONSOLE}/")
        wait_until(lambda: driver.find_element(By.LINK_TEXT, vpc).click() or True, what="the VPC list")
        ids = wait_until(lambda: node_ids(driver) >= {vpc, public, private, igw, nat, gateway, interface,
                                                        public_rt, main_rt} and node_ids(driver),
                         what="the resource map")
        # The interface endpoint's ENI sits in its subnet, named by what owns it.
        enis = ec2.describe_network_interfaces(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["NetworkInterfaces"]
        assert {e["NetworkInterfaceId"] for e in enis} <= ids
        labels = " ".join(map_labels(driver).values())
        assert f"interface endpoint {interface}" in labels and f"NAT gateway {nat}" in labels
        # Lines join each subnet to its table and each table to its gateway.
        edges = map_edges(driver)
        assert {(public, public_rt), (private, main_rt), (public_rt, igw), (main_rt, gateway)} <= edges
        shot(driver, "03-resource-map")
        # The tables below the map name each rule by its id.
        sg = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["SecurityGroups"][0]
        rule_ids = [r["SecurityGroupRuleId"] for r in ec2.describe_security_group_rules(
            Filters=[{"Name": "group-id", "Values": [sg["GroupId"]]}])["SecurityGroupRules"]]
        page = driver.page_source
        assert rule_ids and all(r in page for r in rule_ids)
        # Clicking a box opens its details.
        click(driver, f'g[data-id="{private}"] > a')
        wait_until(lambda: driver.title.startswith(private), what="the subnet's page")
        assert "10.60.1.0/24" in driver.page_source
        shot(driver, "04-subnet-details")
    finally:
        teardown_vpc(ec2, vpc)


def test_a_training_job_appears_on_the_map_and_its_page_follows_it_to_completed(signed_in, cove_server, ec2):
    from selenium.webdriver.common.by import By
    driver = signed_in
    s3, sm = cove_server.client("s3"), cove_server.client("sagemaker")
    bucket = training_bucket(s3)
    vpc = ec2.create_vpc(CidrBlock="10.61.0.0/16")["Vpc"]["VpcId"]
    try:
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.61.1.0/24")["Subnet"]["SubnetId"]
        sg = ec2.create_security_group(GroupName="job", Description="job", VpcId=vpc)["GroupId"]
        rt = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["RouteTables"][0]["RouteTableId"]
        net = {"vpc": vpc, "subnets": [subnet], "sg": sg, "rt": rt}
        s3_endpoint(ec2, net)
        group = f"/cove/console/{vpc}"
        ec2.create_flow_logs(ResourceIds=[vpc], ResourceType="VPC", TrafficType="ALL", LogGroupName=group,
                             DeliverLogsPermissionArn=ROLE)
        driver.get(f"{cove_server.endpoint}{CONSOLE}/vpcs/{vpc}")
        wait_until(lambda: subnet in node_ids(driver), what="the map")
        name = f"console-{uuid.uuid4().hex[:8]}"
        sm.create_training_job(**training_request(name, bucket, net, sleep=6))
        # The page has not been reloaded: the job's ENI appears by itself.
        eni = wait_until(lambda: next((eni for eni, text in map_labels(driver).items()
                                       if f"training job {name}" in text), None),
                         timeout=30, what="the job's ENI on the map")
        shot(driver, "05-job-eni-on-map")
        driver.get(f"{cove_server.endpoint}{CONSOLE}/sagemaker")
        wait_until(lambda: driver.find_element(By.LINK_TEXT, name).click() or True, what="the jobs list")
        wait_until(lambda: "Completed" in driver.find_element(By.CSS_SELECTOR, "main").text, timeout=90,
                   what="the job's status")
        assert wait_for(sm, name)["TrainingJobStatus"] == "Completed"
        text = wait_until(lambda: driver.execute_script(
            "const log = document.querySelector('pre.log'); const main = document.querySelector('main');"
            "return log && log.textContent.includes('done') ? main.innerText : null"), what="the job's log")
        for status in ("Starting", "Downloading", "Training", "Uploading", "Completed"):
            assert status in text
        assert eni in text
        shot(driver, "06-training-job")
        # The job's ENI is gone; its flow log records stay, and the filter keeps only ACCEPT.
        driver.get(f"{cove_server.endpoint}{CONSOLE}/flow-logs/{eni}?action=ACCEPT")
        actions = wait_until(lambda: driver.execute_script(
            "return Array.from(document.querySelectorAll('main tbody tr td .status')).map(e => e.textContent)"),
            timeout=30, what="the flow log records")
        assert set(actions) == {"ACCEPT"}
        shot(driver, "07-flow-log")
    finally:
        teardown_vpc(ec2, vpc)


def test_can_a_reach_b_names_the_blocking_group_and_turns_reachable_after_the_cli_fixes_it(signed_in, cove_server, ec2):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    driver = signed_in
    vpc = ec2.create_vpc(CidrBlock="10.62.0.0/16")["Vpc"]["VpcId"]
    try:
        subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.62.1.0/24")["Subnet"]["SubnetId"]
        app = ec2.create_security_group(GroupName="app", Description="app", VpcId=vpc)["GroupId"]
        db = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
        client = ec2.create_network_interface(SubnetId=subnet, Groups=[app])["NetworkInterface"]["NetworkInterfaceId"]
        server = ec2.create_network_interface(SubnetId=subnet, Groups=[db])["NetworkInterface"]["NetworkInterfaceId"]

        def ask():
            driver.get(f"{cove_server.endpoint}{CONSOLE}/reach")
            driver.find_element(By.NAME, "from").send_keys(client)
            driver.find_element(By.NAME, "to").send_keys(server)
            Select(driver.find_element(By.NAME, "protocol")).select_by_visible_text("tcp")
            driver.find_element(By.NAME, "port").send_keys("5432")
            driver.find_element(By.CSS_SELECTOR, "form.ask button").click()
            return wait_until(lambda: driver.find_element(By.CSS_SELECTOR, "[data-verdict]"), what="the answer")

        verdict = ask()
        assert verdict.get_attribute("data-verdict") == "not-reachable"
        blocking = driver.find_element(By.CSS_SELECTOR, "#answer table").text
        assert db in blocking and "ingress" in blocking
        # The map outlines the blocked ENI in red.
        assert driver.find_element(By.CSS_SELECTOR, f'svg [data-id="{server}"]').get_attribute("data-state") == "blocked"
        shot(driver, "08-reach-blocked")
        aws_cli(cove_server, "ec2", "authorize-security-group-ingress", "--group-id", db, "--protocol", "tcp",
                "--port", "5432", "--source-group", app)
        verdict = ask()
        assert verdict.get_attribute("data-verdict") == "reachable"
        path = driver.find_element(By.CSS_SELECTOR, "#answer").text
        assert client in path and server in path and db in path
        assert driver.find_element(By.CSS_SELECTOR, f'svg [data-id="{server}"]').get_attribute("data-state") == "path"
        shot(driver, "09-reach-reachable")
        for eni in (client, server):
            ec2.delete_network_interface(NetworkInterfaceId=eni)
    finally:
        teardown_vpc(ec2, vpc)


@pytest.mark.parametrize("width,height", [(1280, 800), (420, 860)])
def test_every_page_fits_the_window(signed_in, cove_server, ec2, width, height):
    """At 1280×800 and on a narrow window no page scrolls sideways: wide
    tables and the map scroll inside their own boxes."""
    from selenium.webdriver.common.by import By
    driver = signed_in
    vpc = ec2.create_vpc(CidrBlock="10.63.0.0/16")["Vpc"]["VpcId"]
    try:
        ec2.create_subnet(VpcId=vpc, CidrBlock="10.63.1.0/24")
        driver.set_window_size(width, height)
        for name, path in [("vpcs", "/"), ("map", f"/vpcs/{vpc}"), ("reach", "/reach"), ("sagemaker", "/sagemaker")]:
            driver.get(f"{cove_server.endpoint}{CONSOLE}{path}")
            wait_until(lambda: driver.find_element(By.CSS_SELECTOR, "main h1"), what=name)
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 1, f"{name} scrolls sideways by {overflow} px at {width}px"
            # Every control can be reached and named.
            for field in driver.find_elements(By.CSS_SELECTOR, "main input, main select"):
                assert field.find_element(By.XPATH, "ancestor::label").text.strip()
            shot(driver, f"10-{name}-{width}x{height}")
    finally:
        driver.set_window_size(1280, 800)
        teardown_vpc(ec2, vpc)
