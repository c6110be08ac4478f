//! Workday worker → canonical worker, org unit and location.

use canonical_model::{
    Entity, EntityKind, FieldRule, Location, MapError, Mapper, MappingVersion, OrgUnit, Transform,
    Worker,
};
use serde_json::Value;

use EntityKind::{Location as L, OrgUnit as O, Worker as W};

/// Name of this mapper in `mapping_version`.
pub const MAPPER: &str = "workday.workers";
/// Bump whenever [`rules`] change.
pub const VERSION: &str = "1";

/// Every field rule of the workers mapping. Pointers are relative to one worker record.
pub fn rules() -> Vec<FieldRule> {
    use Transform::*;
    vec![
        FieldRule::new(W, "source_id", &["/id"], Text),
        FieldRule::new(W, "worker_number", &["/workerId"], Text),
        FieldRule::new(W, "display_name", &["/descriptor"], Text),
        FieldRule::new(W, "work_email", &["/primaryWorkEmail"], Text),
        FieldRule::new(W, "work_phone", &["/primaryWorkPhone"], Text),
        FieldRule::new(W, "business_title", &["/businessTitle"], Text),
        FieldRule::new(W, "is_manager", &["/isManager"], Bool),
        FieldRule::new(W, "worker_type", &["/workerType/descriptor"], Text),
        FieldRule::new(W, "job_profile", &["/jobProfile/descriptor"], Text),
        FieldRule::new(W, "time_type", &["/timeType/descriptor"], Text),
        FieldRule::new(W, "hire_date", &["/hireDate"], Date),
        FieldRule::new(W, "fte", &["/fte"], Decimal),
        FieldRule::new(W, "company", &["/company/descriptor"], Text),
        FieldRule::new(W, "cost_center", &["/costCenter/descriptor"], Text),
        FieldRule::new(
            W,
            "org_unit",
            &["/primarySupervisoryOrganization/id"],
            Ref(O),
        ),
        FieldRule::new(
            W,
            "location",
            &["/location/id", "/primaryWorkLocation/id"],
            Ref(L),
        ),
        FieldRule::new(W, "manager", &["/manager/id"], Ref(W)),
        FieldRule::new(W, "source_modified_at", &["/lastModified"], Timestamp),
        FieldRule::new(
            O,
            "source_id",
            &["/primarySupervisoryOrganization/id"],
            Text,
        ),
        FieldRule::new(
            O,
            "name",
            &["/primarySupervisoryOrganization/descriptor"],
            Text,
        ),
        FieldRule::new(
            L,
            "source_id",
            &["/location/id", "/primaryWorkLocation/id"],
            Text,
        ),
        FieldRule::new(
            L,
            "name",
            &["/location/descriptor", "/primaryWorkLocation/descriptor"],
            Text,
        ),
        FieldRule::new(
            L,
            "country",
            &[
                "/location/country/descriptor",
                "/primaryWorkLocation/country/descriptor",
            ],
            Text,
        ),
    ]
}

/// The workers mapper. Reads every value through its [`MappingVersion`].
#[derive(Debug, Clone)]
pub struct WorkersMapper {
    mapping: MappingVersion,
}

impl WorkersMapper {
    pub fn new() -> Self {
        Self::with_mapping(
            MappingVersion::new(MAPPER, VERSION, rules())
                .expect("the built-in workday rules are valid"),
        )
    }

    /// The same mapper logic under another mapping version (a changed rule).
    pub fn with_mapping(mapping: MappingVersion) -> Self {
        Self { mapping }
    }
}

impl Default for WorkersMapper {
    fn default() -> Self {
        Self::new()
    }
}

impl Mapper for WorkersMapper {
    fn mapping(&self) -> &MappingVersion {
        &self.mapping
    }

    fn map(&self, record: &Value) -> Result<Vec<Entity>, MapError> {
        if !record.is_object() {
            return Err(MapError::NotAnObject);
        }
        let r = self.mapping.reader(record);
        let worker = Worker {
            source_id: r.required_text(W, "source_id")?,
            worker_number: r.text(W, "worker_number")?,
            display_name: r.text(W, "display_name")?,
            work_email: r.text(W, "work_email")?,
            work_phone: r.text(W, "work_phone")?,
            business_title: r.text(W, "business_title")?,
            is_manager: r.bool(W, "is_manager")?,
            worker_type: r.text(W, "worker_type")?,
            job_profile: r.text(W, "job_profile")?,
            time_type: r.text(W, "time_type")?,
            hire_date: r.date(W, "hire_date")?,
            termination_date: None,
            employment_status: None,
            fte: r.decimal(W, "fte")?,
            company: r.text(W, "company")?,
            cost_center: r.text(W, "cost_center")?,
            org_unit: r.text(W, "org_unit")?,
            location: r.text(W, "location")?,
            manager: r.text(W, "manager")?,
            source_modified_at: r.timestamp(W, "source_modified_at")?,
        };
        let mut out = Vec::with_capacity(3);
        let org = match worker.org_unit {
            Some(_) => Some(OrgUnit {
                source_id: r.required_text(O, "source_id")?,
                name: r.text(O, "name")?,
                org_type: None,
            }),
            None => None,
        };
        let location = match worker.location {
            Some(_) => Some(Location {
                source_id: r.required_text(L, "source_id")?,
                name: r.text(L, "name")?,
                country: r.text(L, "country")?,
            }),
            None => None,
        };
        out.push(Entity::Worker(worker));
        out.extend(org.map(Entity::OrgUnit));
        out.extend(location.map(Entity::Location));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_a_full_worker_and_its_references() {
        let rec = json!({
            "id": "w1", "descriptor": "Zoë Ørsted", "workerId": "21001", "isManager": true,
            "primaryWorkEmail": "zoe@example.com", "primaryWorkPhone": null, "hireDate": "2019-04-01",
            "fte": 0.5, "primarySupervisoryOrganization": {"id": "o1", "descriptor": "Finance"},
            "location": {"id": "l1", "descriptor": "Berlin", "country": {"id": "c", "descriptor": "Germany"}},
            "lastModified": "2024-05-01T10:00:00.000-07:00", "someNewField": {"x": 1}
        });
        let out = WorkersMapper::new().map(&rec).unwrap();
        assert_eq!(out.len(), 3);
        let Entity::Worker(w) = &out[0] else {
            panic!("worker first")
        };
        assert_eq!(w.display_name.as_deref(), Some("Zoë Ørsted"));
        assert_eq!(w.work_phone, None);
        assert_eq!(w.fte.unwrap().to_string(), "0.5");
        assert_eq!(
            w.source_modified_at.unwrap().to_rfc3339(),
            "2024-05-01T17:00:00+00:00"
        );
        assert_eq!(
            out[2],
            Entity::Location(Location {
                source_id: "l1".into(),
                name: Some("Berlin".into()),
                country: Some("Germany".into())
            })
        );
    }

    #[test]
    fn absent_optional_fields_are_fine_wrong_types_are_errors() {
        let out = WorkersMapper::new().map(&json!({"id": "w2"})).unwrap();
        assert_eq!(out.len(), 1);
        let e = WorkersMapper::new()
            .map(&json!({"id": "w3", "hireDate": 20200101}))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "worker.hire_date at /hireDate: expected a string, found a number"
        );
        assert!(
            WorkersMapper::new()
                .map(&json!({"descriptor": "no id"}))
                .is_err()
        );
        assert_eq!(
            WorkersMapper::new().map(&json!([1])).unwrap_err(),
            MapError::NotAnObject
        );
    }
}
