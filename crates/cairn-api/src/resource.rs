//! Resources (a resource definition placed on a node) and their volumes.

use serde::{Deserialize, Serialize};

use crate::{ApiCallRc, Props, lenient};

/// `ResourceState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub in_use: Option<bool>,
}

/// `StorageVolume` inside a STORAGE layer object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageVolume {
    pub volume_number: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
}

/// `StorageResource`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageResource {
    pub storage_volumes: Vec<StorageVolume>,
}

/// `ResourceLayer`: one node of the resource's layer tree.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceLayer {
    pub children: Vec<ResourceLayer>,
    pub resource_name_suffix: String,
    #[serde(rename = "type")]
    pub layer_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage: Option<StorageResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd: Option<DrbdResource>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub luks: Option<LuksResource>,
}

// The layer data below is typed rather than `serde_json::Value`: a full
// resource list builds it for every resource, and a map of keys and values
// per object was most of that list's time (issue 16). Fields are declared
// in alphabetical order, the order the `Value` maps wrote them in, so the
// bytes stay those clients already parse.

/// `DrbdResource`: the `drbd` member of a DRBD layer object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdResource {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub al_size: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub al_stripes: Option<i64>,
    /// By peer node name.
    pub connections: std::collections::BTreeMap<String, DrbdConnection>,
    pub drbd_volumes: Vec<DrbdVolume>,
    pub flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub may_promote: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_score: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp_ports: Option<Vec<i64>>,
}

/// `DrbdConnection`: one peer in `DrbdResource.connections`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdConnection {
    pub connected: bool,
    pub message: String,
}

/// `DrbdVolume`: in `DrbdResource.drbd_volumes` and the `data` of a DRBD
/// volume layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdVolume {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_device: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drbd_volume_definition: Option<DrbdVolumeDefinition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta_disk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
}

/// `DrbdVolumeDefinition` as a DRBD volume carries it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrbdVolumeDefinition {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minor_number: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_number: Option<i64>,
}

/// `LuksResource`: the `luks` member of a LUKS layer object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LuksResource {
    pub luks_volumes: Vec<LuksVolume>,
}

/// `LuksVolume`: in `LuksResource.luks_volumes` and the `data` of a LUKS
/// volume layer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LuksVolume {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_device: Option<String>,
    pub corrupted_key: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
    pub opened: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    pub volume_number: i64,
}

/// The `data` of a `VolumeLayer`, by the layer's `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum VolumeLayerData {
    Drbd(DrbdVolume),
    Luks(LuksVolume),
    Storage(StorageVolume),
    /// A layer Cairn has no type for (read from another LINSTOR).
    Other(serde_json::Value),
}

impl VolumeLayerData {
    /// Reads `data` as the layer `layer_type` has it.
    pub fn from_value(layer_type: &str, v: serde_json::Value) -> Result<VolumeLayerData, serde_json::Error> {
        Ok(match layer_type {
            "DRBD" => VolumeLayerData::Drbd(serde_json::from_value(v)?),
            "LUKS" => VolumeLayerData::Luks(serde_json::from_value(v)?),
            "STORAGE" => VolumeLayerData::Storage(serde_json::from_value(v)?),
            _ => VolumeLayerData::Other(v),
        })
    }
}

/// `VolumeState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_state: Option<String>,
    /// Per peer node: DRBD replication state and resync progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_states: Option<std::collections::BTreeMap<String, ReplicationState>>,
}

/// `ReplicationState`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicationState {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_percentage: Option<f64>,
}

/// `VolumeLayer`: `{type, data}` in `volumes[].layer_data_list`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VolumeLayer {
    #[serde(rename = "type")]
    pub layer_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<VolumeLayerData>,
}

impl<'de> Deserialize<'de> for VolumeLayer {
    /// `data`'s form depends on `type`, which may come after it.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<VolumeLayer, D::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Raw {
            #[serde(rename = "type")]
            layer_type: String,
            data: Option<serde_json::Value>,
        }
        let raw = Raw::deserialize(d)?;
        let data = match raw.data {
            Some(v) => Some(VolumeLayerData::from_value(&raw.layer_type, v).map_err(serde::de::Error::custom)?),
            None => None,
        };
        Ok(VolumeLayer { layer_type: raw.layer_type, data })
    }
}

/// `Volume`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Volume {
    /// Always present, including 0 (wire rule W11).
    pub volume_number: i64,
    pub storage_pool_name: String,
    pub provider_kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_size_kib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usable_size_kib: Option<i64>,
    pub props: Props,
    pub flags: Vec<String>,
    pub state: VolumeState,
    pub layer_data_list: Vec<VolumeLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    pub reports: Vec<ApiCallRc>,
}

/// `Resource` (also the `resource` member of `ResourceCreate`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Resource {
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    #[serde(deserialize_with = "lenient::string")]
    pub node_name: String,
    #[serde(deserialize_with = "lenient::props")]
    pub props: Props,
    #[serde(deserialize_with = "lenient::string_list")]
    pub flags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_object: Option<ResourceLayer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<ResourceState>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub uuid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_timestamp: Option<i64>,
}

/// `ResourceWithVolumes`: element of `GET /v1/view/resources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceWithVolumes {
    #[serde(flatten)]
    pub resource: Resource,
    pub volumes: Vec<Volume>,
}

/// `ResourceCreate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceCreate {
    pub resource: Resource,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_node_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_i64")]
    pub drbd_tcp_port_count: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub drbd_tcp_ports: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub drbd_client: Option<bool>,
}

/// `ResourceModify`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceModify {
    #[serde(flatten)]
    pub props: crate::PropsModify,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub drbd_tiebreaker: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_bool")]
    pub drbd_client: Option<bool>,
}

/// `ToggleDiskRequest`: `PUT …/resources/{node}/toggle-disk`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToggleDiskRequest {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub storage_pool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string")]
    pub migrate_from: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
}

/// `ToggleDiskDiskful`: the optional body of `…/toggle-disk/diskful[/{pool}]`
/// and `…/migrate-disk/...`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ToggleDiskDiskful {
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "lenient::opt_string_list")]
    pub layer_list: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn volume_layer_data_is_read_by_its_type_wherever_the_type_stands() -> Result<(), serde_json::Error> {
        let list: Vec<VolumeLayer> = serde_json::from_value(json!([
            { "data": { "device_path": "/dev/drbd1000", "drbd_volume_definition": { "minor_number": 1000, "volume_number": 0 } }, "type": "DRBD" },
            { "type": "LUKS", "data": { "volume_number": 0, "opened": true, "corrupted_key": false } },
            { "type": "STORAGE", "data": { "volume_number": 0, "device_path": "/dev/vg/r_00000" } },
            { "type": "NVME", "data": { "anything": [1, 2] } },
            { "type": "CACHE" },
        ]))?;
        let Some(VolumeLayerData::Drbd(d)) = &list[0].data else { panic!("DRBD data: {:?}", list[0]) };
        assert_eq!(d.drbd_volume_definition.as_ref().and_then(|v| v.minor_number), Some(1000));
        assert!(matches!(&list[1].data, Some(VolumeLayerData::Luks(l)) if l.opened && !l.corrupted_key));
        assert!(matches!(&list[2].data, Some(VolumeLayerData::Storage(s)) if s.device_path.as_deref() == Some("/dev/vg/r_00000")));
        assert!(matches!(&list[3].data, Some(VolumeLayerData::Other(v)) if v["anything"][1] == 2));
        assert_eq!(list[4].data, None);
        // Written back, each says what it was read from.
        let back: Vec<VolumeLayer> = serde_json::from_value(serde_json::to_value(&list)?)?;
        assert_eq!(back, list);
        // A data member of the wrong form for its type is an error.
        assert!(serde_json::from_value::<VolumeLayer>(json!({ "type": "LUKS", "data": { "opened": "yes" } })).is_err());
        Ok(())
    }

    #[test]
    fn a_linstor_drbd_layer_object_reads_with_the_members_cairn_does_not_use() -> Result<(), serde_json::Error> {
        // Abridged from LINSTOR's REST answer: members Cairn does not send
        // (peer_slots, drbd_resource_definition, ...) are skipped.
        let layer: ResourceLayer = serde_json::from_value(json!({
            "children": [{ "type": "STORAGE", "storage": { "storage_volumes": [] } }],
            "resource_name_suffix": "",
            "type": "DRBD",
            "drbd": {
                "drbd_resource_definition": { "peer_slots": 7, "transport_type": "IP" },
                "node_id": 1, "peer_slots": 7, "al_stripes": 1, "al_size": 32,
                "flags": ["INITIALIZED"],
                "drbd_volumes": [{ "drbd_volume_definition": { "volume_number": 0, "minor_number": 1001 }, "device_path": "/dev/drbd1001", "backing_device": "/dev/vg/x_00000", "meta_disk": "internal", "allocated_size_kib": 10, "usable_size_kib": 8, "disk_state": "UpToDate", "ext_meta_stor_pool": null }],
                "connections": { "n2": { "connected": true, "message": "Connected" } },
                "promotion_score": 10102, "may_promote": false, "tcp_ports": [7001]
            }
        }))?;
        let d = layer.drbd.expect("drbd");
        assert_eq!((d.node_id, d.tcp_ports.as_deref(), d.may_promote), (Some(1), Some(&[7001i64][..]), Some(false)));
        assert_eq!(d.connections["n2"], DrbdConnection { connected: true, message: "Connected".into() });
        assert_eq!(d.drbd_volumes[0].meta_disk.as_deref(), Some("internal"));
        Ok(())
    }
}
