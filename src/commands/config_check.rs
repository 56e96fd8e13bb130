//! `mnbackup config check`: validate the configuration and print it with secrets masked.

use anyhow::Result;

use super::Ctx;

pub fn run(ctx: &Ctx) -> Result<i32> {
    if ctx.json {
        let mut v = serde_json::to_value(&ctx.config)?;
        mask_json(&mut v);
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        match &ctx.config_path {
            Some(p) => ctx.say(format!(
                "# configuration {} is valid; effective settings:",
                p.display()
            )),
            None => ctx.say("# no configuration file (defaults); effective settings:"),
        }
        print!("{}", ctx.config.masked_toml()?);
        for line in password_kinds(ctx) {
            ctx.say(format!("# {line}"));
        }
    }
    Ok(0)
}

/// How each ZStack properties file stores its database password (ZStack's rule: encrypted only
/// when it decrypts to the `crypt_key_for_v1::` prefix).
fn password_kinds(ctx: &Ctx) -> Vec<String> {
    use crate::engines::mariadb::zstack::{read_db_properties, PropertyKeys};
    let Some(m) = &ctx.config.mariadb else {
        return vec![];
    };
    let mut out = Vec::new();
    for (path, keys, key) in [
        (&m.zstack_properties, PropertyKeys::SERVER, "DB.password"),
        (&m.zstack_ui_properties, PropertyKeys::UI, "db_password"),
    ] {
        let Some(path) = path else { continue };
        out.push(match read_db_properties(path, keys) {
            Ok(z) => format!(
                "{key} in {} is {}; user {}",
                path.display(),
                z.password_kind.describe(),
                z.user
            ),
            Err(e) => format!("cannot read {}: {e:#}", path.display()),
        });
    }
    out
}

fn mask_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(o) => {
            for (k, val) in o.iter_mut() {
                if (k == "password" || k.ends_with("_password")) && val.is_string() {
                    *val = serde_json::Value::String("********".into());
                } else {
                    mask_json(val);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(mask_json),
        _ => {}
    }
}
