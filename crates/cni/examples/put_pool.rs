//! Writes one IPPool into a datastore: the fixture `bench/cni.sh` uses to
//! prepare tabby's side of the benchmark.
//!
//! Usage: `put_pool DATASTORE_URL NAME CIDR BLOCK_SIZE`

use serde_json::json;
use tabby_datastore::Datastore;
use tabby_model::Resource;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, name, cidr, block] = args.as_slice() else {
        return Err("usage: put_pool DATASTORE_URL NAME CIDR BLOCK_SIZE".into());
    };
    let block: u8 = block.parse().map_err(|e| format!("BLOCK_SIZE: {e}"))?;
    let doc = json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {"cidr": cidr, "blockSize": block}
    });
    let mut pool = Resource::from_value(doc).map_err(|e| e.to_string())?;
    pool.check().map_err(|e| e.to_string())?;
    pool.apply_defaults();
    let value = serde_json::to_vec(&pool.to_value()).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let ds = Datastore::connect(url).await.map_err(|e| e.to_string())?;
        ds.put(&format!("/tabby/resources/v3/ippools/{name}"), value)
            .await
            .map_err(|e| e.to_string())
    })?;
    Ok(())
}
