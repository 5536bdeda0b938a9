//! `--web.config.file`: TLS and basic auth, in the YAML that Prometheus'
//! exporter-toolkit defines (the file every Go exporter reads), so one
//! file serves a fleet's node_exporter and this exporter alike.
//!
//! Every key the toolkit knows is read; what this exporter cannot honour
//! (TLS below 1.2, a client certificate that is requested but not
//! verified, `client_allowed_sans`) is an error naming it, never ignored.
//! Unknown keys are errors too (the toolkit is as strict). Relative paths
//! are taken from the file's directory.

use std::{
    collections::BTreeMap,
    hash::{BuildHasher as _, RandomState},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{anyhow, bail, Context as _, Result};
use rustls::{
    crypto::{ring as provider, CryptoProvider},
    server::WebPkiClientVerifier,
    RootCertStore, ServerConfig,
};
use rustls_pki_types::{pem::PemObject as _, CertificateDer, PrivateKeyDer};
use yaml_rust2::{Yaml, YamlLoader};

/// What the web config asks for. The default (no file) is plain HTTP, no auth.
#[derive(Default)]
pub struct WebConfig {
    pub tls: Option<Arc<ServerConfig>>,
    /// User → bcrypt hash.
    users: BTreeMap<String, String>,
    /// Extra response headers (`http_server_config.headers`).
    pub headers: Vec<(String, String)>,
    /// Credentials already checked against their hash: keyed hashes of
    /// (user, password, stored hash), never the password itself. bcrypt is
    /// slow on purpose; Prometheus sends the same credentials every scrape.
    verified: Mutex<Vec<u64>>,
    hasher: RandomState,
}

/// Response headers the toolkit lets a config set.
const ALLOWED_HEADERS: [&str; 5] = [
    "Strict-Transport-Security",
    "X-Content-Type-Options",
    "X-Frame-Options",
    "X-XSS-Protection",
    "Content-Security-Policy",
];

/// The user and password of a `Basic` `Authorization` header's value.
fn basic_credentials(header: Option<&str>) -> Option<(String, String)> {
    use base64::Engine as _;
    let encoded = header?.strip_prefix("Basic ").or_else(|| header?.strip_prefix("basic "))?;
    let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// A bcrypt hash of a random password, made once: an unknown user costs
/// as much time as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let random = RandomState::new().hash_one("no user has this password");
        bcrypt::hash(random.to_string(), bcrypt::DEFAULT_COST).unwrap_or_default()
    })
}

impl WebConfig {
    pub fn read(path: &Path) -> Result<WebConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, dir).with_context(|| format!("web config {}", path.display()))
    }

    pub fn parse(text: &str, dir: &Path) -> Result<WebConfig> {
        let docs = YamlLoader::load_from_str(text).map_err(|err| anyhow!("not YAML: {err}"))?;
        let mut config = WebConfig::default();
        let root = match docs.into_iter().next() {
            None | Some(Yaml::Null) => return Ok(config),
            Some(root) => root,
        };
        let root = Table::new(&root, "the file")?;
        root.only(&["tls_server_config", "http_server_config", "basic_auth_users", "rate_limit"])?;
        if let Some(tls) = root.table("tls_server_config")? {
            config.tls = Some(Arc::new(tls_config(&tls, dir)?));
        }
        if let Some(http) = root.table("http_server_config")? {
            http.only(&["http2", "headers"])?;
            // HTTP/2 is the toolkit's default; Prometheus scrapes over HTTP/1.1, which is all this serves.
            http.bool("http2")?;
            if let Some(headers) = http.table("headers")? {
                for (name, value) in headers.strings()? {
                    let Some(allowed) = ALLOWED_HEADERS.iter().find(|h| h.eq_ignore_ascii_case(&name)) else {
                        bail!(
                            "http_server_config.headers: {name} may not be set (allowed: {})",
                            ALLOWED_HEADERS.join(", ")
                        );
                    };
                    if value.bytes().any(|b| b.is_ascii_control()) {
                        bail!("http_server_config.headers: the value of {name} has a control character");
                    }
                    config.headers.push(((*allowed).to_owned(), value));
                }
            }
        }
        if let Some(users) = root.table("basic_auth_users")? {
            for (user, hash) in users.strings()? {
                if user.contains(':') {
                    bail!("basic_auth_users: user name {user:?} has a ':', which basic auth cannot carry");
                }
                hash.parse::<bcrypt::HashParts>()
                    .map_err(|err| anyhow!("basic_auth_users: the password of {user:?} is not a bcrypt hash: {err}"))?;
                config.users.insert(user, hash);
            }
        }
        if root.get("rate_limit").is_some() {
            bail!("rate_limit is not supported: scrapes are cheap and connections are capped");
        }
        Ok(config)
    }

    /// Whether these credentials were verified before: fast, no bcrypt
    /// (what every scrape after Prometheus' first takes).
    pub fn verified_before(&self, header: Option<&str>) -> bool {
        let Some((user, password)) = basic_credentials(header) else { return false };
        let Some(hash) = self.users.get(&user) else { return false };
        let key = self.hasher.hash_one((&user, &password, hash.as_str()));
        self.verified.lock().is_ok_and(|v| v.contains(&key))
    }

    pub fn needs_auth(&self) -> bool {
        !self.users.is_empty()
    }

    /// Whether an `Authorization` header's value names a user and their
    /// password. Slow (bcrypt) unless these credentials were checked before.
    pub fn authorized(&self, header: Option<&str>) -> bool {
        let Some((user, password)) = basic_credentials(header) else { return false };
        let (hash, known) = match self.users.get(&user) {
            Some(hash) => (hash.as_str(), true),
            None => (dummy_hash(), false),
        };
        let key = self.hasher.hash_one((&user, &password, hash));
        if known && self.verified.lock().is_ok_and(|v| v.contains(&key)) {
            return true;
        }
        let ok = bcrypt::verify(&password, hash).unwrap_or(false) && known;
        if ok {
            if let Ok(mut verified) = self.verified.lock() {
                // Bounded: a few users, each with one password.
                if verified.len() >= 64 {
                    verified.clear();
                }
                verified.push(key);
            }
        }
        ok
    }
}

fn tls_config(tls: &Table<'_>, dir: &Path) -> Result<ServerConfig> {
    tls.only(&[
        "cert_file",
        "key_file",
        "cert",
        "key",
        "client_auth_type",
        "client_ca_file",
        "client_ca",
        "client_allowed_sans",
        "min_version",
        "max_version",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    ])?;
    let pem = |inline: &str, file: &str| -> Result<Option<Vec<u8>>> {
        match (tls.string(inline)?, tls.string(file)?) {
            (Some(_), Some(_)) => bail!("tls_server_config: both {inline} and {file}; give one"),
            (Some(text), None) => Ok(Some(text.into_bytes())),
            (None, Some(path)) => {
                let path = resolve(dir, &path);
                Ok(Some(std::fs::read(&path).with_context(|| format!("tls_server_config.{file}: {}", path.display()))?))
            }
            (None, None) => Ok(None),
        }
    };
    let cert_pem = pem("cert", "cert_file")?.context("tls_server_config needs cert_file (or cert)")?;
    let key_pem = pem("key", "key_file")?.context("tls_server_config needs key_file (or key)")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|err| anyhow!("tls_server_config: the certificate: {err}"))?;
    if certs.is_empty() {
        bail!("tls_server_config: no certificate in cert_file (PEM \"BEGIN CERTIFICATE\" expected)");
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|err| anyhow!("tls_server_config: the key: {err}"))?;

    let version = |name: &str, default: &str| -> Result<u8> {
        let text = tls.string(name)?.unwrap_or_else(|| default.to_owned());
        match text.as_str() {
            "TLS12" => Ok(2),
            "TLS13" => Ok(3),
            "TLS10" | "TLS11" => bail!("tls_server_config.{name}: {text} is not supported (TLS 1.2 and 1.3 are)"),
            other => bail!("tls_server_config.{name}: unknown version {other:?} (TLS12 or TLS13)"),
        }
    };
    let (min, max) = (version("min_version", "TLS12")?, version("max_version", "TLS13")?);
    if min > max {
        bail!("tls_server_config: min_version is above max_version");
    }
    let versions: Vec<&'static rustls::SupportedProtocolVersion> =
        [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
            .into_iter()
            .filter(|(v, _)| (min..=max).contains(v))
            .map(|(_, version)| version)
            .collect();

    let mut crypto: CryptoProvider = provider::default_provider();
    if let Some(names) = tls.strings_list("cipher_suites")? {
        // As Go: the list applies to TLS 1.2; TLS 1.3's suites are always on.
        for name in &names {
            if !crypto.cipher_suites.iter().any(|s| format!("{:?}", s.suite()) == *name) {
                let known: Vec<String> = crypto
                    .cipher_suites
                    .iter()
                    .filter(|s| s.version() == &rustls::version::TLS12)
                    .map(|s| format!("{:?}", s.suite()))
                    .collect();
                bail!("tls_server_config.cipher_suites: {name} is not supported (supported: {})", known.join(", "));
            }
        }
        crypto
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13 || names.contains(&format!("{:?}", s.suite())));
    }
    if let Some(curves) = tls.strings_list("curve_preferences")? {
        let mut groups = Vec::new();
        for curve in &curves {
            let group = match curve.as_str() {
                "X25519" => rustls::NamedGroup::X25519,
                "CurveP256" => rustls::NamedGroup::secp256r1,
                "CurveP384" => rustls::NamedGroup::secp384r1,
                other => bail!(
                    "tls_server_config.curve_preferences: {other} is not supported (X25519, CurveP256, CurveP384)"
                ),
            };
            let kx = crypto.kx_groups.iter().find(|g| g.name() == group).context("curve missing from the provider")?;
            groups.push(*kx);
        }
        crypto.kx_groups = groups;
    }

    let client_ca = pem("client_ca", "client_ca_file")?;
    if tls.get("client_allowed_sans").is_some_and(|v| !matches!(v, Yaml::Null | Yaml::Array(_)))
        || tls.strings_list("client_allowed_sans")?.is_some_and(|l| !l.is_empty())
    {
        bail!(
            "tls_server_config.client_allowed_sans is not supported: issue client certificates from a CA of their own"
        );
    }
    let auth_type = tls.string("client_auth_type")?.unwrap_or_else(|| "NoClientCert".into());
    let builder = ServerConfig::builder_with_provider(Arc::new(crypto.clone()))
        .with_protocol_versions(&versions)
        .context("tls_server_config: no cipher suite left for these versions")?;
    let builder = match auth_type.as_str() {
        "NoClientCert" => {
            if client_ca.is_some() {
                bail!("tls_server_config: client_ca_file is set but client_auth_type is NoClientCert");
            }
            builder.with_no_client_auth()
        }
        "RequireAndVerifyClientCert" | "VerifyClientCertIfGiven" => {
            let ca = client_ca.with_context(|| format!("tls_server_config: {auth_type} needs client_ca_file"))?;
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&ca) {
                roots.add(cert.map_err(|err| anyhow!("client_ca_file: {err}"))?).context("client_ca_file")?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::new(crypto));
            let verifier =
                if auth_type == "VerifyClientCertIfGiven" { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build().context("client_ca_file")?)
        }
        "RequestClientCert" | "RequireAnyClientCert" => bail!(
            "tls_server_config.client_auth_type: {auth_type} is not supported: a client certificate that is not \
             verified proves nothing (use VerifyClientCertIfGiven or RequireAndVerifyClientCert)"
        ),
        other => bail!("tls_server_config.client_auth_type: unknown {other:?}"),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|err| anyhow!("tls_server_config: the certificate and key do not go together: {err}"))?;
    config.ignore_client_order = tls.bool("prefer_server_cipher_suites")?.unwrap_or(true);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

fn resolve(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

/// A YAML mapping with string keys, read strictly.
struct Table<'a> {
    map: &'a yaml_rust2::yaml::Hash,
    what: String,
}

impl<'a> Table<'a> {
    fn new(yaml: &'a Yaml, what: &str) -> Result<Self> {
        match yaml {
            Yaml::Hash(map) => Ok(Table { map, what: what.to_owned() }),
            _ => bail!("{what} is not a mapping"),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Yaml> {
        self.map.get(&Yaml::String(key.to_owned())).filter(|v| !matches!(v, Yaml::Null))
    }

    /// Fails on a key not in `known`.
    fn only(&self, known: &[&str]) -> Result<()> {
        for key in self.map.keys() {
            match key.as_str() {
                Some(k) if known.contains(&k) => {}
                _ => bail!("{}: unknown key {key:?} (known: {})", self.what, known.join(", ")),
            }
        }
        Ok(())
    }

    fn table(&self, key: &str) -> Result<Option<Table<'a>>> {
        self.get(key).map(|v| Table::new(v, key)).transpose()
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.get(key) {
            None => Ok(None),
            Some(Yaml::String(s)) => Ok(Some(s.clone())),
            Some(_) => bail!("{}.{key} is not a string", self.what),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Yaml::Boolean(b)) => Ok(Some(*b)),
            Some(_) => bail!("{}.{key} is not true or false", self.what),
        }
    }

    fn strings_list(&self, key: &str) -> Result<Option<Vec<String>>> {
        match self.get(key) {
            None => Ok(None),
            Some(Yaml::Array(items)) => items
                .iter()
                .map(|item| {
                    item.as_str().map(str::to_owned).with_context(|| format!("{}.{key}: not a string", self.what))
                })
                .collect::<Result<_>>()
                .map(Some),
            Some(_) => bail!("{}.{key} is not a list", self.what),
        }
    }

    /// Every (key, value) as strings.
    fn strings(&self) -> Result<Vec<(String, String)>> {
        self.map
            .iter()
            .map(|(k, v)| match (k.as_str(), v.as_str()) {
                (Some(k), Some(v)) => Ok((k.to_owned(), v.to_owned())),
                _ => bail!("{}: every key and value must be a string", self.what),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_auth_only_configs() {
        assert!(WebConfig::parse("", Path::new(".")).unwrap().tls.is_none());
        let hash = bcrypt::hash("secret", 4).unwrap();
        let config = WebConfig::parse(&format!("basic_auth_users:\n  alice: '{hash}'\n"), Path::new(".")).unwrap();
        use base64::Engine as _;
        let header = |creds: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(creds));
        assert!(config.authorized(Some(&header("alice:secret"))));
        assert!(config.authorized(Some(&header("alice:secret"))), "again, from the cache");
        assert!(!config.authorized(Some(&header("alice:wrong"))));
        assert!(!config.authorized(Some(&header("bob:secret"))));
        assert!(!config.authorized(None));
        assert!(!config.authorized(Some("Bearer x")));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, message) in [
            ("tls_server_config:\n  cert: x\n", "needs key_file"),
            ("tls_server_confg: {}\n", "unknown key"),
            ("basic_auth_users:\n  alice: plain\n", "not a bcrypt hash"),
            ("tls_server_config:\n  cert_file: /nonexistent/c\n  key_file: k\n", "/nonexistent/c"),
            ("http_server_config:\n  headers:\n    Server: x\n", "may not be set"),
            ("rate_limit:\n  interval: 1s\n", "not supported"),
            (": :\n  - [", "not YAML"),
        ] {
            let err = format!("{:#}", WebConfig::parse(text, Path::new(".")).err().expect(text));
            assert!(err.contains(message), "{text:?}: {err}");
        }
    }
}
