//! Children that are lists (`Vec`, arrays), `Option`s and `Box`es of hook
//! nodes, as a user mirroring a Burn model's structure writes them: every
//! tree operation sees their entries under index segments (`blocks.1.out`),
//! string and typed paths reach them, and a bad index or an absent child is
//! an error that says so.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use burn_ndarray::NdArray;
use hooks_core::{
    Ctx, FwdStage, HookCollection, HookError, HookNode, HookTree, PathError, Record, Recorder,
    Scale, Schema, Site, SiteInfo, Zero, path,
};

#[derive(HookCollection, Clone, Default)]
struct Block<B: Backend> {
    out: Site<B, 2>,
}

#[derive(HookCollection, Clone, Default)]
struct Net<B: Backend> {
    blocks: Vec<Block<B>>,
    head: [Site<B, 2>; 2],
    maybe: Option<Site<B, 2>>,
    boxed: Box<Block<B>>,
    grid: Vec<Vec<Site<B, 1>>>,
}

type N = Net<NdArray>;

fn net(blocks: usize, maybe: bool) -> N {
    Net {
        blocks: (0..blocks).map(|_| Block::default()).collect(),
        maybe: maybe.then(Site::default),
        grid: vec![
            vec![Site::default()],
            vec![Site::default(), Site::default()],
        ],
        ..Default::default()
    }
}

fn ones() -> Tensor<NdArray, 2> {
    Tensor::from_data(
        TensorData::new(vec![1.0f32; 2], [1, 2]),
        &Default::default(),
    )
}

fn sum(t: Tensor<NdArray, 2>) -> f32 {
    t.sum().into_scalar()
}

fn paths(tree: &N) -> Vec<String> {
    tree.sites().into_iter().map(|s| s.path).collect()
}

#[test]
fn iteration_names_every_entry_by_index_and_skips_an_absent_option() {
    assert_eq!(
        paths(&net(2, false)),
        [
            "blocks.0.out",
            "blocks.1.out",
            "head.0",
            "head.1",
            "boxed.out",
            "grid.0.0",
            "grid.1.0",
            "grid.1.1"
        ]
    );
    let with_maybe = net(1, true).sites();
    assert!(with_maybe.contains(&SiteInfo {
        path: "maybe".into(),
        rank: 2,
        shape: None,
        per_layer: false,
        doc: "",
    }));
    assert_eq!(with_maybe.len(), 8);
}

#[test]
fn append_all_bind_and_is_empty_reach_list_entries() {
    let mut tree = net(2, true);
    assert!(tree.is_empty());
    tree.append_all(FwdStage::Fwd, Scale(2.0));
    assert!(!tree.is_empty());
    assert_eq!(sum(tree.blocks[1].out.call(ones(), &Ctx::root())), 4.0);
    assert_eq!(
        sum(tree.grid[1][1]
            .call(Tensor::ones([3], &Default::default()), &Ctx::root())
            .unsqueeze()),
        6.0
    );
    assert_eq!(
        sum(tree.maybe.as_ref().unwrap().call(ones(), &Ctx::root())),
        4.0
    );

    tree.bind("layer", 7).unwrap();
    let err = tree.bind("layer", 8).err().unwrap();
    assert_eq!(
        err,
        HookError::AlreadyBound {
            key: "layer".into(),
            site: Some("blocks.0.out".into())
        }
    );
}

#[test]
fn recordings_are_keyed_by_the_entry_path() {
    let rec = Recorder::<NdArray>::new();
    let mut tree = net(2, false);
    tree.append_all(FwdStage::Fwd, Record::into(&rec));
    tree.blocks[1].out.call(ones() * 3.0, &Ctx::root());
    tree.head[0].call(ones(), &Ctx::root());
    assert_eq!(rec.keys(), ["blocks.1.out", "head.0"]);
    let t = rec.get::<2>("blocks.1.out", None).unwrap();
    assert_eq!(sum(t), 6.0);
}

#[test]
fn a_string_path_with_an_index_reaches_one_entry() {
    let mut tree = net(3, false);
    tree.append_to_path("blocks.1.out.fwd", Zero).unwrap();
    tree.append_to_path("head.1.fwd2", Scale(5.0)).unwrap();
    tree.append_to_path("grid.1.0.fwd", Zero).unwrap();
    assert_eq!(sum(tree.blocks[0].out.call(ones(), &Ctx::root())), 2.0);
    assert_eq!(sum(tree.blocks[1].out.call(ones(), &Ctx::root())), 0.0);
    assert_eq!(sum(tree.blocks[2].out.call(ones(), &Ctx::root())), 2.0);
    assert_eq!(sum(tree.head[1].call(ones(), &Ctx::root())), 10.0);
    assert!(tree.grid[0][0].is_empty() && !tree.grid[1][0].is_empty());
}

#[test]
fn an_index_past_a_vec_says_its_length() {
    let mut tree = net(2, false);
    let err = tree.append_to_path("blocks.3.out.fwd", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "`blocks` has 2 entries (0..=1), not 3 (in \"blocks.3.out.fwd\")"
    );
    assert!(tree.is_empty(), "nothing was appended");
    let err = net(0, false)
        .append_to_path("blocks.0.out.fwd", Zero)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "`blocks` has no entries, so no entry 0 (in \"blocks.0.out.fwd\")"
    );
    let err = tree.append_to_path("grid.0.1.fwd", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "`grid.0` has 1 entry (0), not 1 (in \"grid.0.1.fwd\")"
    );
}

#[test]
fn an_index_past_an_array_is_caught_from_the_schema_alone() {
    let err = N::resolve("head.2.fwd").unwrap_err();
    assert_eq!(
        err,
        PathError::IndexOutOfRange {
            list: "head".into(),
            len: 2,
            index: 2,
            path: "head.2.fwd".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "`head` has 2 entries (0..=1), not 2 (in \"head.2.fwd\")"
    );
}

#[test]
fn a_name_where_a_list_needs_an_index_is_an_error() {
    let err = net(2, false)
        .append_to_path("blocks.out.fwd", Zero)
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "`blocks` is a list: name an entry by its index, e.g. `blocks.0` (or all of them, \
         `blocks.*`), not `out` (in \"blocks.out.fwd\")"
    );
}

#[test]
fn a_path_through_none_says_the_child_is_absent() {
    let mut tree = net(1, false);
    let err = tree.append_to_path("maybe.fwd", Zero).err().unwrap();
    assert_eq!(
        err.to_string(),
        "`maybe` is absent: this tree holds `None` there (in \"maybe.fwd\")"
    );
    let mut present = net(1, true);
    present.append_to_path("maybe.fwd", Zero).unwrap();
    assert!(!present.is_empty());
}

#[test]
fn globs_select_list_entries() {
    let tree = net(3, false);
    let picked = |p: &[&str]| -> Vec<String> {
        tree.sites_matching(p)
            .unwrap()
            .into_iter()
            .map(|s| s.path)
            .collect()
    };
    assert_eq!(
        picked(&["blocks.*.out"]),
        ["blocks.0.out", "blocks.1.out", "blocks.2.out"]
    );
    assert_eq!(picked(&["blocks.**"]).len(), 3);
    assert_eq!(picked(&["head"]), ["head.0", "head.1"]);
    assert_eq!(picked(&["grid.1.*"]), ["grid.1.0", "grid.1.1"]);
    assert_eq!(picked(&["blocks.2"]), ["blocks.2.out"]);
}

#[test]
fn typed_paths_with_indices_are_checked_where_they_are_used() {
    let mut tree = net(2, false);
    let second = path!(N: blocks[1].out);
    assert_eq!(second.name(), "blocks.1.out");
    tree.try_at_mut(&second).unwrap().fwd.append(Zero);
    assert_eq!(sum(tree.blocks[1].out.call(ones(), &Ctx::root())), 0.0);

    let i = 1;
    let head = path!(N: head[i]);
    assert_eq!(head.name(), "head.1");
    assert!(tree.try_at(&head).unwrap().is_empty());
    assert_eq!(path!(N: grid[1][0]).name(), "grid.1.0");

    let past = path!(N: blocks[3].out);
    let err = tree.try_at(&past).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`blocks` has 2 entries (0..=1), not 3 (in \"blocks.3.out\")"
    );
    let err = tree.try_at(&path!(N: grid[0][1])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`grid.0` has 1 entry (0), not 1 (in \"grid.0.1\")"
    );
}

#[test]
fn the_schema_describes_lists_and_options() {
    let Schema::Collection { children, .. } = N::schema() else {
        panic!("a derived tree is a collection");
    };
    let kinds: Vec<(&str, String)> = children
        .iter()
        .map(|c| {
            let kind = match (c.schema)() {
                Schema::List { len, .. } => format!("list of {len:?}"),
                Schema::Optional { .. } => "optional".into(),
                Schema::Collection { type_name, .. } => type_name.into(),
                Schema::Site { rank } => format!("site {rank}"),
            };
            (c.name, kind)
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("blocks", "list of None".to_string()),
            ("head", "list of Some(2)".to_string()),
            ("maybe", "optional".to_string()),
            ("boxed", "Block".to_string()),
            ("grid", "list of None".to_string()),
        ]
    );
    let err = N::resolve("blocks.x").unwrap_err();
    assert!(matches!(err, PathError::NotAnIndex { .. }), "{err:?}");
}

#[test]
fn rendering_and_clone_see_the_entries() {
    let mut tree = net(2, false);
    tree.append_to_path("blocks.1.out.fwd", Zero).unwrap();
    let copy = tree.clone();
    assert!(copy.blocks[0].out.is_empty() && !copy.blocks[1].out.is_empty());
    let text = copy.render();
    for line in [
        "    blocks",
        "        blocks.1",
        "            blocks.1.out",
        "    maybe",
    ] {
        assert!(text.contains(&format!("{line}\n")), "{line:?} in\n{text}");
    }
    assert!(
        text.contains("(none)"),
        "an absent option is shown:\n{text}"
    );
}

#[test]
fn the_schema_says_when_only_the_tree_knows_a_lists_length() {
    let blocks = N::schema().child("blocks").map(|c| (c.schema)()).unwrap();
    assert_eq!(
        blocks.child_names(),
        ["an index (the length is known at run time)"]
    );
    let head = N::schema().child("head").map(|c| (c.schema)()).unwrap();
    assert_eq!(head.child_names(), ["0..2 (an index)"]);
    // A misspelt name under a list entry is checked against the entry's type.
    let err = N::resolve("blocks.0.ot.fwd").unwrap_err();
    assert_eq!(
        err.to_string(),
        "no hook site `ot` under `blocks.0` (in \"blocks.0.ot.fwd\"); available: out; did you mean `out`?"
    );
}
