//! A throw-away certificate authority for the test bed's TLS servers and clients.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::Error;

/// A CA that signs server and client certificates, written as PEM files into a directory.
pub struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: PathBuf,
}

/// Paths of a certificate and its key.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Authority {
    pub fn new(dir: &Path, name: &str) -> Result<Self, Error> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(Error::cert)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().map_err(Error::cert)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(Error::cert)?;
        let authority = Self {
            issuer,
            dir: dir.to_owned(),
        };
        write(&authority.ca_file(), &authority.issuer.pem())?;
        Ok(authority)
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `common_name`, valid for the given DNS names and IPs (SANs).
    pub fn issue(
        &self,
        file_stem: &str,
        common_name: &str,
        sans: &[&str],
    ) -> Result<CertFiles, Error> {
        self.issue_in(file_stem, common_name, None, sans)
    }

    /// A client certificate whose organization is the Kubernetes group `group`.
    pub fn issue_for_group(
        &self,
        file_stem: &str,
        common_name: &str,
        group: &str,
    ) -> Result<CertFiles, Error> {
        self.issue_in(file_stem, common_name, Some(group), &[])
    }

    fn issue_in(
        &self,
        file_stem: &str,
        common_name: &str,
        organization: Option<&str>,
        sans: &[&str],
    ) -> Result<CertFiles, Error> {
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(Error::cert)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        if let Some(organization) = organization {
            params
                .distinguished_name
                .push(DnType::OrganizationName, organization);
        }
        let key = KeyPair::generate().map_err(Error::cert)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(Error::cert)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file_stem}.crt")),
            key: self.dir.join(format!("{file_stem}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

/// A key pair for signing service-account tokens: (private key file, public key file).
pub fn signing_key(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let key = KeyPair::generate().map_err(Error::cert)?;
    let private = dir.join("sa.key");
    let public = dir.join("sa.pub");
    write(&private, &key.serialize_pem())?;
    write(&public, &key.public_key_pem())?;
    Ok((private, public))
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::io(format!("write {}", path.display()), e))
}
