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
    }
    Ok(0)
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
