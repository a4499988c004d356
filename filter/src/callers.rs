//! Per-tenant allow-lists: which callers may spend a tenant's credentials,
//! optionally only for some methods and path prefixes. Compiled from the
//! snapshot (the sidecar's configuration is the one source of truth) and
//! matched VM-locally: a request makes no host call here beyond reading
//! `:method`/`:path`, and only for a rule that restricts them.

/// How a rule names callers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: any authenticated caller.
    Any,
    Exact(Box<[u8]>),
    /// `prefix*`.
    Prefix(Box<[u8]>),
}

/// One compiled allow-list entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pattern: Pattern,
    /// Empty: any method.
    methods: Vec<Box<[u8]>>,
    /// Empty: any path.
    paths: Vec<Box<[u8]>>,
}

impl Rule {
    /// Compiles a wire rule; `None` for a pattern the sidecar should never
    /// have sent (it is dropped, so it allows nobody).
    pub fn compile(wire: &protocol::CallerRule<'_>) -> Option<Rule> {
        if protocol::invalid_caller_pattern(&wire.id).is_some() {
            return None;
        }
        let pattern = match wire.id.strip_suffix('*') {
            Some("") => Pattern::Any,
            Some(prefix) => Pattern::Prefix(prefix.as_bytes().into()),
            None => Pattern::Exact(wire.id.as_bytes().into()),
        };
        Some(Rule {
            pattern,
            methods: wire.methods.iter().map(|m| m.as_bytes().into()).collect(),
            paths: wire.paths.iter().map(|p| p.as_bytes().into()).collect(),
        })
    }

    fn names(&self, caller: &[u8]) -> bool {
        match &self.pattern {
            Pattern::Any => true,
            Pattern::Exact(id) => **id == *caller,
            Pattern::Prefix(p) => caller.starts_with(p),
        }
    }
}

/// What a decision needs to read from the request, lazily.
pub trait Request {
    fn method(&self) -> Option<Vec<u8>>;
    fn path(&self) -> Option<Vec<u8>>;
}

/// Whether `caller` may use a tenant with these rules for `request`.
/// Reads the method and path at most once each, and only when a rule that
/// names the caller restricts them.
pub fn allowed(rules: &[Rule], caller: &[u8], request: &impl Request) -> bool {
    let mut method: Option<Option<Vec<u8>>> = None;
    let mut path: Option<Option<Vec<u8>>> = None;
    for rule in rules.iter().filter(|r| r.names(caller)) {
        if !rule.methods.is_empty() {
            let m = method.get_or_insert_with(|| request.method());
            if !m
                .as_deref()
                .is_some_and(|m| rule.methods.iter().any(|r| **r == *m))
            {
                continue;
            }
        }
        if !rule.paths.is_empty() {
            let p = path.get_or_insert_with(|| request.path());
            // The query string is not part of the path a rule names.
            let Some(p) = p.as_deref() else { continue };
            let p = p.split(|b| *b == b'?').next().unwrap_or(p);
            if !rule.paths.iter().any(|prefix| p.starts_with(prefix)) {
                continue;
            }
        }
        return true;
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::borrow::Cow;
    use std::cell::Cell;

    use super::*;

    struct Req {
        method: &'static str,
        path: &'static str,
        reads: Cell<u32>,
    }

    impl Request for Req {
        fn method(&self) -> Option<Vec<u8>> {
            self.reads.set(self.reads.get() + 1);
            Some(self.method.as_bytes().to_vec())
        }
        fn path(&self) -> Option<Vec<u8>> {
            self.reads.set(self.reads.get() + 1);
            Some(self.path.as_bytes().to_vec())
        }
    }

    fn req(method: &'static str, path: &'static str) -> Req {
        Req {
            method,
            path,
            reads: Cell::new(0),
        }
    }

    fn rule(id: &str, methods: &[&str], paths: &[&str]) -> Rule {
        Rule::compile(&protocol::CallerRule {
            id: Cow::Owned(id.into()),
            methods: methods.iter().map(|m| Cow::Owned(m.to_string())).collect(),
            paths: paths.iter().map(|p| Cow::Owned(p.to_string())).collect(),
        })
        .unwrap()
    }

    /// Exact, prefix and any-caller patterns; an empty list allows nobody.
    #[test]
    fn patterns() {
        let rules = [
            rule("system:serviceaccount:billing:invoicer", &[], &[]),
            rule("spiffe://cluster.local/ns/team-a/*", &[], &[]),
        ];
        let r = req("GET", "/");
        assert!(allowed(
            &rules,
            b"system:serviceaccount:billing:invoicer",
            &r
        ));
        assert!(!allowed(
            &rules,
            b"system:serviceaccount:billing:invoicer2",
            &r
        ));
        assert!(!allowed(&rules, b"system:serviceaccount:billing", &r));
        assert!(allowed(
            &rules,
            b"spiffe://cluster.local/ns/team-a/sa/x",
            &r
        ));
        assert!(!allowed(
            &rules,
            b"spiffe://cluster.local/ns/team-b/sa/x",
            &r
        ));
        assert_eq!(r.reads.get(), 0, "unrestricted rules read nothing");
        assert!(allowed(&[rule("*", &[], &[])], b"anyone", &r));
        assert!(!allowed(&[], b"anyone", &r));
        assert!(Rule::compile(&protocol::CallerRule {
            id: Cow::Borrowed("a*b"),
            methods: vec![],
            paths: vec![]
        })
        .is_none());
    }

    /// Method and path restrictions; the query string is ignored; another
    /// rule for the same caller can still allow.
    #[test]
    fn restrictions() {
        let rules = [
            rule("c", &["GET", "HEAD"], &["/v1/reports/", "/v1/status"]),
            rule("c", &["POST"], &["/v1/uploads/"]),
        ];
        assert!(allowed(
            &rules,
            b"c",
            &req("GET", "/v1/reports/7?x=/v1/uploads/")
        ));
        assert!(allowed(&rules, b"c", &req("POST", "/v1/uploads/a")));
        assert!(!allowed(&rules, b"c", &req("POST", "/v1/reports/7")));
        assert!(!allowed(&rules, b"c", &req("GET", "/v2/reports/7")));
        assert!(!allowed(&rules, b"c", &req("GET", "/x?/v1/status")));
        let r = req("DELETE", "/v1/reports/1");
        assert!(!allowed(&rules, b"c", &r));
        assert_eq!(r.reads.get(), 1, "the method is read once");
    }
}
