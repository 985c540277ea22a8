//! Writes the CRD YAML generated from the Rust types (`make crds` stores it in crds/yaml/).

fn main() -> Result<(), serde_yaml::Error> {
    print!("{}", cilium_crds::all_yaml()?);
    Ok(())
}
