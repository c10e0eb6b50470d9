//! The Kubernetes deployment (`kubernetes/`, a kustomize base): it builds with
//! `kubectl kustomize`; every built-in object validates strictly against the Kubernetes
//! schema (PyPI `kubernetes-validate`); the prometheus-operator objects (ServiceMonitor,
//! PrometheusRule) pass a strict schema of the fields used, written from the operator's v1
//! CRDs, and reference what exists (Services, ports, job labels, the token Secret); the
//! PrometheusRule's groups pass `promtool check rules`, and `rules/tests/*.yml` pass against
//! them with the Kubernetes job names; the generated files (`kubernetes/prometheusrule.yaml`,
//! `kubernetes/generated/`) are what `scripts/gen-kubernetes.py` makes now.
//!
//! A missing tool fails the test naming its package: `kubectl` (with kustomize v5),
//! `promtool` (Debian `prometheus`), Python 3 with Debian `python3-yaml` and
//! `python3-jsonschema`, and PyPI `kubernetes-validate`; `scripts/setup.sh` installs them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The Kubernetes version whose schema the built-in objects must satisfy.
const KUBERNETES_VERSION: &str = "1.34.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Runs `program args` in the workspace root with `stdin`; panics naming `package` when the
/// program is missing.
fn run(program: &str, args: &[&str], stdin: Option<&[u8]>, package: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                panic!("{program} is missing: install {package} (scripts/setup.sh does)")
            }
            _ => panic!("cannot run {program}: {e}"),
        });
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(input).expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Fails naming the package when `python3` cannot import `module`.
fn need_python_module(module: &str, package: &str) {
    let out = run(
        "python3",
        &["-c", &format!("import {module}")],
        None,
        "Debian python3",
    );
    assert!(
        out.status.success(),
        "python3 cannot import {module}: install {package} (scripts/setup.sh does): {}",
        text(&out.stderr)
    );
}

/// `kubectl kustomize kubernetes/`, after checking that kubectl bundles kustomize v5.
fn build() -> String {
    let version = run(
        "kubectl",
        &["version", "--client"],
        None,
        "kubectl (kustomize v5)",
    );
    assert_success("kubectl version --client", &version);
    let version = text(&version.stdout);
    assert!(
        version.contains("Kustomize Version: v5"),
        "kubectl must bundle kustomize v5 (kubectl 1.27 or later), found:\n{version}"
    );
    let out = run("kubectl", &["kustomize", "kubernetes/"], None, "kubectl");
    assert_success("kubectl kustomize kubernetes/", &out);
    text(&out.stdout)
}

#[test]
fn kustomize_builds_the_base() {
    let built = build();
    for kind in [
        "kind: Namespace",
        "kind: DaemonSet",
        "kind: Deployment",
        "kind: StatefulSet",
        "kind: ServiceMonitor",
        "kind: PrometheusRule",
    ] {
        assert!(built.contains(kind), "the build has no {kind}");
    }
}

#[test]
fn built_in_objects_validate_strictly_against_the_kubernetes_schema() {
    need_python_module("kubernetes_validate", "PyPI kubernetes-validate");
    let built = build();
    let dir = tempfile::tempdir().expect("tempdir");
    // One file per object, without the prometheus-operator ones (they have no schema there).
    let split = run(
        "python3",
        &[
            "-c",
            "import sys, yaml\n\
             n = 0\n\
             for d in yaml.safe_load_all(sys.stdin):\n\
             \x20   if d and not d['apiVersion'].startswith('monitoring.coreos.com/'):\n\
             \x20       n += 1\n\
             \x20       open(f'{sys.argv[1]}/{n:02d}-{d[\"kind\"]}.yaml', 'w').write(yaml.safe_dump(d))\n\
             print(n)",
            dir.path().to_str().expect("utf-8 path"),
        ],
        Some(built.as_bytes()),
        "Debian python3-yaml",
    );
    assert_success("splitting the build", &split);
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .map(|e| e.expect("entry").path().display().to_string())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "only {} built-in objects", files.len());
    let mut args = vec!["--strict", "-k", KUBERNETES_VERSION, "--quiet"];
    args.extend(files.iter().map(String::as_str));
    let out = run(
        "kubernetes-validate",
        &args,
        None,
        "PyPI kubernetes-validate",
    );
    assert_success("kubernetes-validate --strict", &out);
    // --quiet prints failures and warnings only.
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(!said.contains("ERROR"), "{said}");
}

/// The strict check of the prometheus-operator objects and of the references between the
/// objects; reads the build on stdin, the workspace root as its argument.
const CHECK_OBJECTS: &str = r#"# Reads `kubectl kustomize kubernetes/` on stdin; checks the prometheus-operator objects
# against a strict schema of the fields this base uses (written from the v1 CRDs of
# monitoring.coreos.com, with additionalProperties: false everywhere, where the API server
# would silently prune an unknown field), then the references between the objects.
import json, pathlib, re, sys
import yaml, jsonschema

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"

def obj(props, required=()):
    return {"type": "object", "properties": props, "required": list(required),
            "additionalProperties": False}

STR = {"type": "string"}
STRMAP = {"type": "object", "additionalProperties": {"type": "string"}}
DUR = {"type": "string", "pattern": DURATION}
META = obj({"name": {"type": "string", "minLength": 1}, "namespace": STR,
            "labels": STRMAP, "annotations": STRMAP}, ["name", "namespace"])
SECRET_KEY = obj({"name": {"type": "string", "minLength": 1}, "key": STR,
                  "optional": {"type": "boolean"}}, ["name", "key"])
SELECTOR = obj({"matchLabels": STRMAP, "matchExpressions": {"type": "array", "items": obj({
    "key": STR, "operator": STR, "values": {"type": "array", "items": STR}}, ["key", "operator"])}})
SERVICE_MONITOR = obj({
    "apiVersion": {"const": "monitoring.coreos.com/v1"},
    "kind": {"const": "ServiceMonitor"},
    "metadata": META,
    "spec": obj({
        "jobLabel": STR,
        "targetLabels": {"type": "array", "items": STR},
        "podTargetLabels": {"type": "array", "items": STR},
        "selector": SELECTOR,
        "namespaceSelector": obj({"any": {"type": "boolean"},
                                  "matchNames": {"type": "array", "items": STR}}),
        "endpoints": {"type": "array", "minItems": 1, "items": obj({
            "port": STR, "targetPort": {"type": ["string", "integer"]}, "path": STR,
            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
            "interval": DUR, "scrapeTimeout": DUR, "honorLabels": {"type": "boolean"},
            "authorization": obj({"type": STR, "credentials": SECRET_KEY}),
        })},
    }, ["selector", "endpoints"]),
}, ["apiVersion", "kind", "metadata", "spec"])
RULE = obj({"alert": STR, "record": STR, "expr": {"type": ["string", "integer"]},
            "for": DUR, "keep_firing_for": DUR, "labels": STRMAP, "annotations": STRMAP},
           ["expr"])
PROMETHEUS_RULE = obj({
    "apiVersion": {"const": "monitoring.coreos.com/v1"},
    "kind": {"const": "PrometheusRule"},
    "metadata": META,
    "spec": obj({"groups": {"type": "array", "items": obj({
        "name": {"type": "string", "minLength": 1}, "interval": DUR, "query_offset": DUR,
        "limit": {"type": "integer"}, "labels": STRMAP,
        "rules": {"type": "array", "items": RULE}}, ["name"])}}, ["groups"]),
}, ["apiVersion", "kind", "metadata", "spec"])

root = pathlib.Path(sys.argv[1])
docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
errors = []
def fail(msg):
    errors.append(msg)

def validate(schema, doc):
    for e in jsonschema.Draft7Validator(schema).iter_errors(doc):
        fail(f"{doc['kind']}/{doc['metadata'].get('name')}: {'.'.join(map(str, e.path))}: {e.message}")

def of(kind):
    return [d for d in docs if d["kind"] == kind]

monitors, rules = of("ServiceMonitor"), of("PrometheusRule")
for d in docs:
    if d["apiVersion"].startswith("monitoring.coreos.com/"):
        if d["kind"] not in ("ServiceMonitor", "PrometheusRule"):
            fail(f"unexpected prometheus-operator kind {d['kind']}")
for d in monitors:
    validate(SERVICE_MONITOR, d)
for d in rules:
    validate(PROMETHEUS_RULE, d)
    names = [g["name"] for g in d["spec"]["groups"]]
    if len(names) != len(set(names)):
        fail("PrometheusRule: duplicate group names (list-map key `name`)")
    for g in d["spec"]["groups"]:
        for r in g["rules"]:
            if ("alert" in r) == ("record" in r):
                fail(f"group {g['name']}: a rule must have exactly one of alert, record: {r}")
            if "record" in r and ({"for", "annotations", "keep_firing_for"} & r.keys()):
                fail(f"recording rule {r['record']}: alert-only fields")
if len(monitors) != 3 or len(rules) != 1:
    fail(f"expected 3 ServiceMonitors and 1 PrometheusRule, found {len(monitors)}, {len(rules)}")

# References: every ServiceMonitor selects exactly one Service of the build, whose ports
# include the endpoint's port and whose labels include the jobLabel; the job names that
# result contain no "etcd" (the etcd mixin's job=~".*etcd.*") and are the ones the rules use.
services, secrets_used = of("Service"), set()
jobs = {}
for m in monitors:
    ns = m["spec"].get("namespaceSelector", {}).get("matchNames", [m["metadata"]["namespace"]])
    want = m["spec"]["selector"].get("matchLabels", {})
    hits = [s for s in services if s["metadata"]["namespace"] in ns
            and want.items() <= s["metadata"].get("labels", {}).items()]
    name = m["metadata"]["name"]
    if len(hits) != 1:
        fail(f"ServiceMonitor {name} selects {len(hits)} Services")
        continue
    svc = hits[0]
    job = svc["metadata"]["labels"].get(m["spec"].get("jobLabel", ""), svc["metadata"]["name"])
    if re.fullmatch(".*etcd.*", job):
        fail(f"ServiceMonitor {name}: job {job!r} matches the etcd mixin's job=~\".*etcd.*\"")
    jobs[name] = job
    ports = {p.get("name") for p in svc["spec"]["ports"]}
    for ep in m["spec"]["endpoints"]:
        if ep["port"] not in ports:
            fail(f"ServiceMonitor {name}: port {ep['port']} is not a port of Service {svc['metadata']['name']}")
        cred = ep.get("authorization", {}).get("credentials")
        if cred:
            secrets_used.add((cred["name"], cred["key"]))
rule_text = json.dumps(rules[0]["spec"]) if rules else ""
used_jobs = set(re.findall(r'job=\\"([^\\]*)\\"', rule_text))
if not used_jobs or not used_jobs <= set(jobs.values()):
    fail(f"the rules use jobs {sorted(used_jobs)}, the ServiceMonitors make {sorted(jobs.values())}")

# The workloads: what the README and agent.yaml promise.
pods = {d["kind"]: d["spec"]["template"]["spec"] for d in docs
        if d["kind"] in ("DaemonSet", "Deployment", "StatefulSet")}
for kind, spec in pods.items():
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
            fail(f"{kind}: container {c['name']}: read-only root and no privilege escalation")
        if sc.get("capabilities", {}).get("drop") != ["ALL"]:
            fail(f"{kind}: container {c['name']}: drop ALL capabilities")
        for p in ("readinessProbe", "livenessProbe"):
            if p not in c:
                fail(f"{kind}: container {c['name']}: no {p}")
        if "memory" not in c.get("resources", {}).get("limits", {}):
            fail(f"{kind}: container {c['name']}: no memory limit")
    if spec.get("automountServiceAccountToken") is not False:
        fail(f"{kind}: mounts a service account token it does not use")
for kind in ("Deployment", "StatefulSet"):
    psc = pods[kind].get("securityContext", {})
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != 65532:
        fail(f"{kind}: must run as uid 65532, non-root")
    if any(c.get("securityContext", {}).get("capabilities", {}).get("add") for c in pods[kind]["containers"]):
        fail(f"{kind}: adds capabilities")
agent = pods["DaemonSet"]
if not (agent.get("hostPID") and agent.get("hostNetwork")):
    fail("agent: needs hostPID and hostNetwork")
if agent.get("nodeSelector") != {"node-role.kubernetes.io/control-plane": ""}:
    fail("agent: nodeSelector must pick the control-plane nodes")
tolerated = {t["key"] for t in agent.get("tolerations", []) if t.get("effect") == "NoSchedule"}
if not {"node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master"} <= tolerated:
    fail("agent: must tolerate the control-plane and master taints")
c = agent["containers"][0]
if c["securityContext"]["capabilities"].get("add") != ["SYS_PTRACE"]:
    fail("agent: exactly SYS_PTRACE added")
args = dict(a.split("=", 1) for a in c["args"] if "=" in a)
vols = {v["name"]: v for v in agent["volumes"]}
mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
data_dir, probe_dir = args["--data-dir"], args["--fsync-probe-dir"]
if not probe_dir.startswith(data_dir + "/") or probe_dir.startswith(data_dir + "/member"):
    fail("agent: the probe dir must be inside the data dir's filesystem and outside member/")
for path, m in mounts.items():
    v = vols[m["name"]]
    if "hostPath" in v and v["hostPath"]["path"] != path:
        fail(f"agent: host path {v['hostPath']['path']} mounted at another path {path}")
    if "hostPath" in v and (path == probe_dir) == bool(m.get("readOnly")):
        fail(f"agent: {path}: only the probe dir may be writable")
if mounts.get(data_dir, {}).get("readOnly") is not True:
    fail("agent: the data dir must be mounted read-only")
relay = pods["StatefulSet"]["containers"][0]
if not any(a.startswith("--auth-token-file=") for a in relay["args"]):
    fail("relay: listens on the pod network, so it needs --auth-token-file")
token_secrets = {v["secret"]["secretName"] for s in pods.values() for v in s["volumes"] if "secret" in v}
for name, key in secrets_used:
    if name not in token_secrets or key != "token":
        fail(f"ServiceMonitor credentials {name}/{key} are not the token the pods mount")

cms = {d["metadata"]["name"]: d for d in of("ConfigMap")}
relay_cm = [d for n, d in cms.items() if n.startswith("etcd-monitor-relay-")]
if len(relay_cm) != 1 or relay_cm[0]["data"].get("relay.yml") != (root / "alerting/relay.yml").read_text():
    fail("the relay ConfigMap's relay.yml is not alerting/relay.yml")
dashboards = {k for d in cms.values() if d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"
              for k in d.get("data", {})}
want = {p.name for p in (root / "grafana/dashboards").glob("*.json")}
if dashboards != want:
    fail(f"dashboard ConfigMaps hold {sorted(dashboards)}, grafana/dashboards has {sorted(want)}")
for d in cms.values():
    for k, v in d.get("data", {}).items():
        if k.endswith(".json"):
            json.loads(v)

for e in errors:
    print(e)
if errors:
    sys.exit(1)
print(f"ok: {len(monitors)} ServiceMonitors (jobs {sorted(jobs.values())}), {len(rules)} PrometheusRule")
"#;

#[test]
fn prometheus_operator_objects_match_their_schema_and_references() {
    need_python_module("yaml", "Debian python3-yaml");
    need_python_module("jsonschema", "Debian python3-jsonschema");
    let built = build();
    let root = root();
    let out = run(
        "python3",
        &["-c", CHECK_OBJECTS, root.to_str().expect("utf-8 path")],
        Some(built.as_bytes()),
        "Debian python3",
    );
    assert_success("the prometheus-operator objects' check", &out);
    println!("{}", text(&out.stdout));
}

fn generator(args: &[&str]) -> Output {
    need_python_module("yaml", "Debian python3-yaml");
    let mut all = vec!["scripts/gen-kubernetes.py"];
    all.extend_from_slice(args);
    run("python3", &all, None, "Debian python3")
}

#[test]
fn generated_files_are_up_to_date() {
    let out = generator(&["--check"]);
    assert_success(
        "scripts/gen-kubernetes.py --check (run scripts/gen-kubernetes.py and commit)",
        &out,
    );
    // The relay's configuration is a byte-for-byte copy.
    let root = root();
    assert_eq!(
        std::fs::read(root.join("kubernetes/generated/relay.yml")).expect("the copy"),
        std::fs::read(root.join("alerting/relay.yml")).expect("the source"),
        "kubernetes/generated/relay.yml differs from alerting/relay.yml"
    );
}

#[test]
fn prometheus_rule_groups_pass_promtool_check_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = generator(&["--rule-tests", dir.path().to_str().expect("utf-8 path")]);
    assert_success("scripts/gen-kubernetes.py --rule-tests", &out);
    let rules = dir.path().join("rules.yml");
    let out = run(
        "promtool",
        &["check", "rules", rules.to_str().expect("utf-8 path")],
        None,
        "Debian prometheus",
    );
    assert_success("promtool check rules (the PrometheusRule's spec)", &out);
    let said = text(&out.stdout);
    assert!(said.contains("SUCCESS"), "{said}");
}

#[test]
fn rule_unit_tests_pass_against_the_prometheus_rule_with_kubernetes_job_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = generator(&["--rule-tests", dir.path().to_str().expect("utf-8 path")]);
    assert_success("scripts/gen-kubernetes.py --rule-tests", &out);
    let tests_dir = dir.path().join("tests");
    let mut files: Vec<String> = std::fs::read_dir(&tests_dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule tests written");
    for f in &files {
        let body = std::fs::read_to_string(tests_dir.join(f)).expect("read test");
        assert!(
            !body.contains("job=\"etcd-monitor") && !body.contains("job: etcd-monitor"),
            "{f}: a job name was not rewritten"
        );
    }
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = Command::new("promtool")
        .args(&args)
        .current_dir(&tests_dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool: {e}: install Debian prometheus"));
    assert_success("promtool test rules (Kubernetes job names)", &out);
}
