//! `/etc/mender/mender-connect.conf`: every key of the reference, its defaults and validation.
//!
//! Contract for the rest of the agent: `Config::load(primary, fallback) -> Result<Loaded, ConfigError>`
//! where `Loaded { config: Config, warnings: Vec<String> }`; `Config` has one field per reference key
//! (durations as `std::time::Duration`, limits grouped as in the JSON).
