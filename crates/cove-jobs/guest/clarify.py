"""Cove's built-in SageMaker Clarify analyzer (bias metrics).

Cove runs this in a processing job whose image is AWS's
sagemaker-clarify-processing, under the processing container contract: the
analysis configuration and the dataset are in the job's ProcessingInputs
(`analysis_config`, `dataset`), the results go to its `analysis_result`
output. It uses only the standard library, so it runs on the host's
read-only Python like a script-mode job.

- Pre-training bias: CI, DPL, KL, JS (from the labels alone).
- Post-training bias: DPPL, DI. They need the model's predictions, so the
  analyzer creates a shadow endpoint from `predictor.model_name` through the
  SageMaker API (the endpoint runs with the model's own VpcConfig), sends it
  the dataset's features through SageMaker Runtime, then deletes it. Both
  APIs are called by their real HTTPS names with the job's role
  credentials, signed with SigV4. From a private subnet this needs
  interface endpoints for both, exactly as on AWS. Under network isolation,
  there is no network, so the job fails saying so.

Writes `analysis.json` (Clarify's layout) and `<report name>.html`. A
failure goes to /opt/ml/output/failure and /opt/ml/output/message (the
ExitMessage), and the exit status is 1.
"""

import csv
import datetime
import hashlib
import hmac
import html
import io
import json
import math
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

DESCRIPTIONS = {
    "CI": "Class Imbalance (CI)",
    "DPL": "Difference in Positive Proportions in Labels (DPL)",
    "KL": "Kullback-Liebler Divergence (KL)",
    "JS": "Jensen-Shannon Divergence (JS)",
    "DPPL": "Difference in Positive Proportions in Predicted Labels (DPPL)",
    "DI": "Disparate Impact (DI)",
}
PRE_TRAINING = ("CI", "DPL", "KL", "JS")
POST_TRAINING = ("DPPL", "DI")
BATCH_ROWS = 100


class Failure(Exception):
    """Ends the job with this message."""


def log(*args):
    print(*args, flush=True)


# ---- inputs ----

def paths():
    """Where the inputs and the output are, from processingjobconfig.json."""
    conf_path = "/opt/ml/config/processingjobconfig.json"
    conf = json.load(open(conf_path)) if os.path.exists(conf_path) else {}
    local = {i.get("InputName"): i.get("S3Input", {}).get("LocalPath") for i in conf.get("ProcessingInputs") or []}
    outputs = (conf.get("ProcessingOutputConfig") or {}).get("Outputs") or []
    out = {o.get("OutputName"): o.get("S3Output", {}).get("LocalPath") for o in outputs}
    return (local.get("analysis_config") or "/opt/ml/processing/input/config",
            local.get("dataset") or "/opt/ml/processing/input/data",
            out.get("analysis_result") or "/opt/ml/processing/output")


def read_config(directory):
    path = os.path.join(directory, "analysis_config.json")
    if not os.path.exists(path):
        raise Failure(f"ClientError: analysis_config.json not found in {directory}")
    try:
        return json.load(open(path))
    except ValueError as e:
        raise Failure(f"ClientError: analysis_config.json is not valid JSON: {e}")


def read_dataset(directory, config):
    kind = config.get("dataset_type", "text/csv")
    if kind != "text/csv":
        raise Failure(f"ClientError: dataset_type {kind} is not supported by Cove's Clarify analyzer (text/csv only)")
    headers = config.get("headers")
    rows = []
    for root, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            with open(os.path.join(root, name), newline="") as f:
                rows.extend(r for r in csv.reader(f) if r)
    if not rows:
        raise Failure(f"ClientError: the dataset in {directory} has no rows")
    if headers is None:
        headers, rows = rows[0], rows[1:]
    elif rows[0] == headers:
        rows = rows[1:]
    width = len(headers)
    for n, row in enumerate(rows):
        if len(row) != width:
            raise Failure(f"ClientError: dataset row {n + 1} has {len(row)} columns, the headers {width}")
    return headers, rows


def column(headers, name_or_index, what):
    if isinstance(name_or_index, int):
        if 0 <= name_or_index < len(headers):
            return name_or_index
    elif name_or_index in headers:
        return headers.index(name_or_index)
    raise Failure(f"ClientError: the {what} {name_or_index!r} is not a column of the dataset ({', '.join(headers)})")


def number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def matches(value, wanted):
    """Whether a cell is one of the wanted values (compared as numbers when both are)."""
    for w in wanted:
        a, b = number(value), number(w)
        if (a is not None and b is not None and a == b) or str(value) == str(w):
            return True
    return False


def is_positive(value, positive_values):
    """A label (or a predicted label) is positive when it is one of the values."""
    return matches(value, positive_values)


# ---- metrics ----

def proportion(flags):
    return sum(flags) / len(flags) if flags else float("nan")


def kl(p, q):
    """KL(p || q) over the classes where both are non-zero."""
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0 and qi > 0)


def pre_training(labels, facet):
    """labels: positive or not per row; facet: in the sensitive facet (d) or not (a)."""
    a = [y for y, f in zip(labels, facet) if not f]
    d = [y for y, f in zip(labels, facet) if f]
    if not a or not d:
        raise Failure("ClientError: the facet value selects all rows or none; bias metrics need both groups")
    qa, qd = proportion(a), proportion(d)
    pa, pd = [qa, 1 - qa], [qd, 1 - qd]
    m = [(x + y) / 2 for x, y in zip(pa, pd)]
    return {
        "CI": (len(a) - len(d)) / (len(a) + len(d)),
        "DPL": qa - qd,
        "KL": kl(pa, pd),
        "JS": 0.5 * (kl(pa, m) + kl(pd, m)),
    }


def post_training(predicted, facet):
    a = [y for y, f in zip(predicted, facet) if not f]
    d = [y for y, f in zip(predicted, facet) if f]
    qa, qd = proportion(a), proportion(d)
    return {"DPPL": qa - qd, "DI": qd / qa if qa else float("nan")}


def wanted_methods(section, known):
    if section is None:
        return []
    methods = section.get("methods", "all")
    if methods == "all":
        return list(known)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise Failure(f"ClientError: bias metric(s) {', '.join(unknown)} are not supported by Cove's Clarify "
                      f"analyzer (supported: {', '.join(known)})")
    return list(methods)


def facet_groups(headers, rows, facet):
    """[(value_or_threshold as Clarify prints it, per-row membership)] for one facet."""
    i = column(headers, facet["name_or_index"], "facet")
    values = facet.get("value_or_threshold")
    if values:
        return [(",".join(str(v) for v in values), [matches(r[i], values) for r in rows])]
    distinct = sorted({r[i] for r in rows})
    return [(v, [r[i] == v for r in rows]) for v in distinct]


def section(config, headers, rows, flags, methods, compute):
    label = config["label"]
    out = {"label": headers[column(headers, label, "label")] if isinstance(label, int) else label,
           "facets": {},
           "label_value_or_threshold": ",".join(str(v) for v in config.get("label_values_or_threshold", []))}
    for facet in config.get("facet") or []:
        name = facet["name_or_index"]
        name = headers[name] if isinstance(name, int) else name
        out["facets"][name] = [
            {"value_or_threshold": value,
             "metrics": [{"name": m, "description": DESCRIPTIONS[m], "value": clean(compute(flags, member)[m])}
                         for m in methods]}
            for value, member in facet_groups(headers, rows, facet)]
    return out


def clean(x):
    return None if isinstance(x, float) and math.isnan(x) else x


# ---- the shadow endpoint ----

class Aws:
    """SigV4-signed calls to SageMaker and SageMaker Runtime by their real names."""

    def __init__(self):
        self.region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        self.key = os.environ.get("AWS_ACCESS_KEY_ID", "")
        self.secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "")
        self.token = os.environ.get("AWS_SESSION_TOKEN")

    def call(self, host, path, body, headers, timeout=30):
        now = datetime.datetime.now(datetime.timezone.utc)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {k.lower(): v for k, v in headers.items()}
        headers.update({"host": host, "x-amz-date": stamp})
        if self.token:
            headers["x-amz-security-token"] = self.token
        signed = ";".join(sorted(headers))
        canonical = "\n".join(["POST", path, "", "".join(f"{k}:{headers[k].strip()}\n" for k in sorted(headers)),
                               signed, hashlib.sha256(body).hexdigest()])
        scope = f"{day}/{self.region}/sagemaker/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret).encode()
        for part in (day, self.region, "sagemaker", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.key}/{scope}, SignedHeaders={signed}, "
                                    f"Signature={signature}")
        request = urllib.request.Request(f"https://{host}{path}", data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            raise Failure(f"ClientError: {host} answered {e.code}: {detail}")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise Failure(
                f"ClientError: Unable to reach {host} ({reason}). The shadow endpoint for post-training bias "
                "metrics cannot be created or called: Clarify needs the SageMaker API and SageMaker Runtime, "
                "through interface VPC endpoints or a NAT gateway, and a job with network isolation has no network.")

    def sagemaker(self, operation, payload):
        body = json.dumps(payload).encode()
        answer = self.call(f"api.sagemaker.{self.region}.amazonaws.com", "/", body, {
            "content-type": "application/x-amz-json-1.1", "x-amz-target": f"SageMaker.{operation}"})
        return json.loads(answer or b"{}")

    def invoke(self, endpoint, body, content_type, accept):
        return self.call(f"runtime.sagemaker.{self.region}.amazonaws.com", f"/endpoints/{endpoint}/invocations",
                         body, {"content-type": content_type, "accept": accept}, timeout=60)


def parse_predictions(answer, accept, predictor, count):
    text = answer.decode("utf-8")
    if accept == "application/json":
        data = json.loads(text)
        if isinstance(data, dict):
            data = data.get("predictions", data.get("outputs", data.get("predicted_label")))
        values = data
    else:
        index = predictor.get("label") if isinstance(predictor.get("label"), int) else 0
        values = [row[index] for row in csv.reader(io.StringIO(text)) if row]
    if not isinstance(values, list) or len(values) != count:
        raise Failure(f"ClientError: the shadow endpoint answered {len(values) if isinstance(values, list) else 'no'} "
                      f"predictions for {count} records")
    return values


def predictions(config, headers, rows, label_index):
    predictor = config.get("predictor") or {}
    model = predictor.get("model_name")
    if not model:
        raise Failure("ClientError: post-training bias metrics need predictor.model_name in analysis_config.json")
    aws = Aws()
    name = f"{predictor.get('endpoint_name_prefix', 'sm-clarify')}-{model}"[:50] + "-" + uuid.uuid4().hex[:8]
    content_type = predictor.get("content_type", "text/csv")
    accept = predictor.get("accept_type", "text/csv")
    if content_type != "text/csv":
        raise Failure(f"ClientError: predictor.content_type {content_type} is not supported (text/csv only)")
    log(f"Creating shadow endpoint {name} for model {model}")
    aws.sagemaker("CreateEndpointConfig", {"EndpointConfigName": name, "ProductionVariants": [{
        "VariantName": "AllTraffic", "ModelName": model,
        "InstanceType": predictor.get("instance_type", "ml.m5.large"),
        "InitialInstanceCount": int(predictor.get("initial_instance_count", 1))}]})
    try:
        aws.sagemaker("CreateEndpoint", {"EndpointName": name, "EndpointConfigName": name})
        try:
            deadline = time.time() + 600
            while True:
                d = aws.sagemaker("DescribeEndpoint", {"EndpointName": name})
                if d["EndpointStatus"] == "InService":
                    break
                if d["EndpointStatus"] == "Failed" or time.time() > deadline:
                    raise Failure(f"ClientError: the shadow endpoint {name} did not come up: "
                                  f"{d.get('FailureReason', d['EndpointStatus'])}")
                time.sleep(1)
            log(f"Shadow endpoint {name} is InService; sending {len(rows)} records")
            out = []
            for start in range(0, len(rows), BATCH_ROWS):
                batch = [[v for j, v in enumerate(r) if j != label_index] for r in rows[start:start + BATCH_ROWS]]
                buf = io.StringIO()
                csv.writer(buf, lineterminator="\n").writerows(batch)
                answer = aws.invoke(name, buf.getvalue().encode(), content_type, accept)
                out.extend(parse_predictions(answer, accept, predictor, len(batch)))
            return out
        finally:
            aws.sagemaker("DeleteEndpoint", {"EndpointName": name})
            log(f"Deleted shadow endpoint {name}")
    finally:
        aws.sagemaker("DeleteEndpointConfig", {"EndpointConfigName": name})


# ---- outputs ----

def report(path, title, analysis):
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for key, heading in (("pre_training_bias_metrics", "Pre-training bias"),
                         ("post_training_bias_metrics", "Post-training bias")):
        sec = analysis.get(key)
        if not sec:
            continue
        parts.append(f"<h2>{heading}</h2><p>Label <b>{html.escape(str(sec['label']))}</b>, positive when "
                     f"<b>{html.escape(sec['label_value_or_threshold'])}</b>.</p>")
        for facet, groups in sec["facets"].items():
            for g in groups:
                parts.append(f"<h3>Facet {html.escape(facet)} = {html.escape(str(g['value_or_threshold']))}</h3>"
                             "<table border='1'><tr><th>Metric</th><th>Value</th></tr>")
                for m in g["metrics"]:
                    value = "n/a" if m["value"] is None else f"{m['value']:.4f}"
                    parts.append(f"<tr><td>{html.escape(m['description'])}</td><td>{value}</td></tr>")
                parts.append("</table>")
    parts.append("</body></html>\n")
    with open(path, "w") as f:
        f.write("\n".join(parts))


def fail(message):
    log(message)
    os.makedirs("/opt/ml/output", exist_ok=True)
    for name in ("failure", "message"):
        with open(os.path.join("/opt/ml/output", name), "w") as f:
            f.write(message[:1024])
    sys.exit(1)


def main():
    config_dir, data_dir, output_dir = paths()
    config = read_config(config_dir)
    headers, rows = read_dataset(data_dir, config)
    if "label" not in config:
        raise Failure("ClientError: analysis_config.json has no label")
    label_index = column(headers, config["label"], "label")
    positive_values = config.get("label_values_or_threshold") or []
    if not positive_values:
        raise Failure("ClientError: analysis_config.json has no label_values_or_threshold")
    labels = [is_positive(r[label_index], positive_values) for r in rows]
    methods = config.get("methods") or {}
    pre = wanted_methods(methods.get("pre_training_bias"), PRE_TRAINING)
    post = wanted_methods(methods.get("post_training_bias"), POST_TRAINING)
    log(f"Dataset: {len(rows)} rows, {len(headers)} columns; label {headers[label_index]}; "
        f"pre-training {pre or 'none'}, post-training {post or 'none'}")
    analysis = {"version": "1.0"}
    if pre:
        analysis["pre_training_bias_metrics"] = section(config, headers, rows, labels, pre, pre_training)
    if post:
        raw = predictions(config, headers, rows, label_index)
        threshold = config.get("probability_threshold", (config.get("predictor") or {}).get("probability_threshold"))
        if threshold is not None:
            predicted = [number(p) is not None and number(p) > float(threshold) for p in raw]
        else:
            predicted = [is_positive(p, positive_values) for p in raw]
        analysis["post_training_bias_metrics"] = section(config, headers, rows, predicted, post, post_training)
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "analysis.json"), "w") as f:
        json.dump(analysis, f, indent=2)
    options = methods.get("report") or {}
    report(os.path.join(output_dir, f"{options.get('name', 'report')}.html"),
           options.get("title", "Clarify Bias Report"), analysis)
    log(f"Wrote analysis.json and {options.get('name', 'report')}.html to {output_dir}")


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        fail(str(e))
