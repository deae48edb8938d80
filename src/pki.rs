//! A small certificate authority for a cluster (`cairn pki`): one CA, a
//! certificate per host (its TCP listener) and per client (a management
//! engine, an operator's CLI). Keys are written 0600 and never overwritten.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca-key.pem";
/// How long issued certificates are valid (VDSM's engine issues for 5 years).
const VALID_DAYS: i64 = 5 * 365;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}")]
    Cert(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cairnd listener: server authentication for its names.
    Host,
    /// A caller of cairnd.
    Client,
}

/// Writes `text` to a new file with `mode`; an existing file is an error.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io(path))
}

fn validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(VALID_DAYS);
}

/// Creates the CA in `dir` (created 0700 if missing).
pub fn init_ca(dir: &Path, name: &str) -> Result<PathBuf, PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(io(dir))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Cairn");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_new(&dir.join(CA_KEY), &key.serialize_pem(), 0o600)?;
    write_new(&dir.join(CA_CERT), &cert.pem(), 0o644)?;
    Ok(dir.join(CA_CERT))
}

/// Issues a certificate for `name` signed by the CA in `dir`: `<name>.pem`
/// and `<name>-key.pem`. A host certificate carries `name` and `sans`
/// (DNS names or IP addresses) as subject alternative names.
pub fn issue(dir: &Path, name: &str, role: Role, sans: &[String]) -> Result<PathBuf, PkiError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        return Err(PkiError::Invalid(format!(
            "{name:?}: a certificate name is letters, digits, '-', '_' and '.'"
        )));
    }
    let ca_key_path = dir.join(CA_KEY);
    let ca_cert_path = dir.join(CA_CERT);
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?)?;
    let ca_pem = std::fs::read_to_string(&ca_cert_path).map_err(io(&ca_cert_path))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;

    let mut names: Vec<String> = Vec::new();
    if role == Role::Host {
        names.push(name.to_string());
        names.extend(sans.iter().cloned());
    }
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => Ok(SanType::DnsName(n.clone().try_into()?)),
        })
        .collect::<Result<_, rcgen::Error>>()?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Cairn");
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![match role {
        Role::Host => ExtendedKeyUsagePurpose::ServerAuth,
        Role::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let cert_path = dir.join(format!("{name}.pem"));
    write_new(
        &dir.join(format!("{name}-key.pem")),
        &key.serialize_pem(),
        0o600,
    )?;
    write_new(&cert_path, &cert.pem(), 0o644)?;
    Ok(cert_path)
}

/// The common name of a certificate's subject.
pub fn subject_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_issues_host_and_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        init_ca(&pki, "test cluster").unwrap();
        assert!(init_ca(&pki, "again").is_err(), "a CA is never overwritten");
        issue(
            &pki,
            "host1",
            Role::Host,
            &["127.0.0.1".into(), "localhost".into()],
        )
        .unwrap();
        issue(&pki, "admin", Role::Client, &[]).unwrap();
        assert!(issue(&pki, "../evil", Role::Client, &[]).is_err());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(pki.join("admin-key.pem")).unwrap().mode() & 0o777,
            0o600
        );

        let host = crate::tls::TlsFiles::in_dir(&pki, "host1");
        let client = crate::tls::TlsFiles::in_dir(&pki, "admin");
        crate::tls::server_config(&host).unwrap();
        crate::tls::client_config(&client).unwrap();
        use rustls::pki_types::pem::PemObject;
        let der = rustls::pki_types::CertificateDer::from_pem_file(&client.cert).unwrap();
        assert_eq!(subject_name(&der).as_deref(), Some("admin"));
    }
}
