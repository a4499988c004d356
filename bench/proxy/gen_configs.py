#!/usr/bin/env python3
"""Derives the benchmark's Envoy bootstraps from envoy/local.yaml.

Every case keeps local.yaml's structure (listener, health_check filter,
router, third_party_api cluster) and only rewrites ports and .wasm paths,
then swaps the auth filter:
  a   no auth filter: health_check + router;
  b   our filter exactly as shipped (token_fetcher service + bearer_injector);
  b0  the same, plus "default_tenant": requests carry no x-tenant-id header;
  c   envoy.filters.http.credential_injector with the oauth2 credential;
  d   the no-op Wasm filter (bench/noop-filter) on V8;
  bx  (optional) b with another build of the filter, to measure a change;
  bj  b with caller identity "jwt": Envoy's jwt_authn (local JWKS, verified-
      token cache, as in envoy/envoy.yaml) before the filter; every request
      carries the same valid ServiceAccount-shaped token (cache hits);
  bm  b with caller identity "mtls": the listener requires a client
      certificate (as in envoy/envoy-mtls.yaml); wrk reaches it through an
      nginx TLS front on core 1 that keeps its mTLS connections alive;
  bm0 bm with the filter in anonymous mode: bm - bm0 is the cost of reading
      the identity and deciding the allow-list.
Cases b, bj, bm and bm0 all keep local.yaml's RBAC method filter and the
upstream header_mutation (so do a, c and d: a constant cost).
One change applies to all cases: local.yaml's per-request stdout access log is
removed, because it is a constant cost that has nothing to do with the auth
filter and would only make every ratio look closer to 1.
"""
import argparse
import copy
import json
import os

import yaml

WASM_FILTER = "envoy.filters.http.wasm"


def hcm(cfg):
    return cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def cluster(cfg, name):
    return next(c for c in cfg["static_resources"]["clusters"] if c["name"] == name)


def set_port(c, port):
    addr = c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    addr["socket_address"]["port_value"] = port


def replace_filter(cfg, new):
    filters = hcm(cfg)["http_filters"]
    i = next(i for i, f in enumerate(filters) if f["name"] == WASM_FILTER)
    if new is None:
        del filters[i]
    else:
        filters[i] = new


def drop_filter_service(cfg):
    """Cases other than b do not run our token_fetcher or need the sidecar."""
    cfg.pop("bootstrap_extensions", None)
    cfg["static_resources"]["clusters"] = [
        c for c in cfg["static_resources"]["clusters"] if c["name"] != "sidecar"
    ]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True, help="envoy/local.yaml")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--filter-wasm", required=True)
    p.add_argument("--noop-wasm", required=True)
    p.add_argument("--variant-wasm", help="adds case bx: b with this .wasm instead")
    p.add_argument("--variant-route-strip", action="store_true",
                   help="case bx: Envoy's route removes the tenant header (request_headers_to_remove)")
    p.add_argument("--upstream-port", type=int, required=True)
    p.add_argument("--sidecar-port", type=int, required=True)
    p.add_argument("--token-port", type=int, required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--jwks", help="JWKS file for case bj")
    p.add_argument("--tls-dir", help="ca.crt, server.crt, server.key for cases bm/bm0")
    p.add_argument("--ports", required=True,
                   help="case=listener:admin,... e.g. a=27410:27420,b=27411:27421")
    a = p.parse_args()

    with open(a.base) as f:
        base = yaml.safe_load(f)
    # Common rewrites.
    hcm(base).pop("access_log", None)
    set_port(cluster(base, "third_party_api"), a.upstream_port)
    set_port(cluster(base, "sidecar"), a.sidecar_port)
    for ext in base.get("bootstrap_extensions", []):
        ext["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = a.filter_wasm
    wasm = next(f for f in hcm(base)["http_filters"] if f["name"] == WASM_FILTER)
    wasm["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = a.filter_wasm

    cases = {}
    cases["a"] = copy.deepcopy(base)
    replace_filter(cases["a"], None)
    drop_filter_service(cases["a"])

    cases["b"] = copy.deepcopy(base)

    if a.variant_wasm:
        cases["bx"] = copy.deepcopy(base)
        for ext in cases["bx"].get("bootstrap_extensions", []):
            ext["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = a.variant_wasm
        w = next(f for f in hcm(cases["bx"])["http_filters"] if f["name"] == WASM_FILTER)
        w["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"] = a.variant_wasm
        if a.variant_route_strip:
            tenant_header = json.loads(w["typed_config"]["config"]["configuration"]["value"]).get(
                "tenant_header", "x-tenant-id")
            for vh in hcm(cases["bx"])["route_config"]["virtual_hosts"]:
                for route in vh["routes"]:
                    route["request_headers_to_remove"] = [tenant_header]

    def set_identity(cfg, identity):
        w = next(f for f in hcm(cfg)["http_filters"] if f["name"] == WASM_FILTER)
        conf = w["typed_config"]["config"]["configuration"]
        js = json.loads(conf["value"])
        js["identity"] = identity
        conf["value"] = json.dumps(js)

    if a.jwks:
        cases["bj"] = copy.deepcopy(base)
        set_identity(cases["bj"], {"mode": "jwt", "jwt_payload": "jwt_payload", "claim": "sub"})
        filters = hcm(cases["bj"])["http_filters"]
        i = next(i for i, f in enumerate(filters) if f["name"] == WASM_FILTER)
        filters.insert(i, {
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
                "providers": {"kubernetes": {
                    "issuer": "https://kubernetes.default.svc.cluster.local",
                    "audiences": ["auth-proxy"],
                    "local_jwks": {"filename": a.jwks},
                    "require_expiration": True,
                    "forward": False,
                    "payload_in_metadata": "jwt_payload",
                    "jwt_cache_config": {"jwt_cache_size": 1000},
                }},
                "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "kubernetes"}}],
            },
        })

    if a.tls_dir:
        for name, identity in (("bm", {"mode": "mtls", "san": "uri"}), ("bm0", {"mode": "anonymous"})):
            cases[name] = copy.deepcopy(base)
            set_identity(cases[name], identity)
            chain = cases[name]["static_resources"]["listeners"][0]["filter_chains"][0]
            chain["transport_socket"] = {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    "require_client_certificate": True,
                    "common_tls_context": {
                        "tls_certificates": [{
                            "certificate_chain": {"filename": os.path.join(a.tls_dir, "server.crt")},
                            "private_key": {"filename": os.path.join(a.tls_dir, "server.key")},
                        }],
                        "validation_context": {"trusted_ca": {"filename": os.path.join(a.tls_dir, "ca.crt")}},
                    },
                },
            }

    cases["b0"] = copy.deepcopy(base)
    w = next(f for f in hcm(cases["b0"])["http_filters"] if f["name"] == WASM_FILTER)
    conf = w["typed_config"]["config"]["configuration"]
    js = json.loads(conf["value"])
    js["default_tenant"] = a.tenant
    conf["value"] = json.dumps(js)

    cases["c"] = copy.deepcopy(base)
    drop_filter_service(cases["c"])
    replace_filter(cases["c"], {
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            # Like our filter: the caller's Authorization is always replaced,
            # and a request is refused (401) while there is no token.
            "overwrite": True,
            "allow_request_without_credential": False,
            "credential": {
                "name": "envoy.http.injected_credentials.oauth2",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.oauth2.v3.OAuth2",
                    "token_endpoint": {
                        "uri": f"http://127.0.0.1:{a.token_port}/token",
                        "cluster": "oauth_token",
                        "timeout": "3s",
                    },
                    "client_credentials": {
                        "client_id": f"{a.tenant}-native",
                        "client_secret": {"name": "oauth_client_secret"},
                        "auth_type": "BASIC_AUTH",
                    },
                },
            },
        },
    })
    cases["c"]["static_resources"]["clusters"].append({
        "name": "oauth_token",
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": "oauth_token",
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": "127.0.0.1", "port_value": a.token_port}}}}]}],
        },
    })
    cases["c"]["static_resources"]["secrets"] = [{
        "name": "oauth_client_secret",
        "generic_secret": {"secret": {"inline_string": "bench-native-secret"}},
    }]

    cases["d"] = copy.deepcopy(base)
    drop_filter_service(cases["d"])
    noop = copy.deepcopy(wasm)
    cfg = noop["typed_config"]["config"]
    cfg["name"] = "noop"
    cfg["root_id"] = ""
    cfg["vm_config"]["vm_id"] = "noop"
    cfg["vm_config"]["code"]["local"]["filename"] = a.noop_wasm
    cfg.pop("configuration", None)
    replace_filter(cases["d"], noop)

    ports = dict(item.split("=") for item in a.ports.split(","))
    os.makedirs(a.out, exist_ok=True)
    for name, cfg in cases.items():
        if name not in ports:
            continue
        listen, admin = (int(x) for x in ports[name].split(":"))
        cfg["admin"]["address"]["socket_address"]["port_value"] = admin
        cfg["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"] = listen
        with open(os.path.join(a.out, f"envoy-{name}.yaml"), "w") as f:
            f.write(f"# Generated by bench/proxy/gen_configs.py from envoy/local.yaml: case {name}\n")
            yaml.safe_dump(cfg, f, sort_keys=False)


if __name__ == "__main__":
    main()
