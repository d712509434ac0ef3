//! Template slots of the world's entities: the names the data files use (`{animal}`, `{a_occupation}`,
//! `{pron}`, ...), filled from one animal, food, person or town.

use crate::data::{Animal, Food, data};
use crate::text::{Slots, number_word, with_article};
use crate::world::{Person, Town, World};

/// `animal`, `a_animal`, `legs`, `habitat`, `diet`, `colour`.
pub fn animal(a: &Animal) -> Slots {
    let mut s = Slots::new();
    s.set("animal", a.name.clone())
        .set("a_animal", with_article(&a.name))
        .set("legs", number_word(a.legs))
        .set("habitat", a.habitat.clone())
        .set("diet", a.diet.clone())
        .set("colour", a.colour.clone());
    s
}

/// `food`, `colour`, `taste`, `kind`.
pub fn food(f: &Food) -> Slots {
    let mut s = Slots::new();
    s.set("food", f.name.clone())
        .set("colour", f.colour.clone())
        .set("taste", f.taste.clone())
        .set("kind", f.kind.clone());
    s
}

/// `town`, `feature_phrase`, `feature`, `food` (what the town is famous for).
pub fn town(t: &Town) -> Slots {
    let mut s = Slots::new();
    s.set("town", t.name.clone())
        .set("feature_phrase", t.feature_phrase.clone())
        .set("feature", t.feature.clone())
        .set("food", t.food.clone());
    s
}

/// A person's slots: `name`, `full`, `surname`, `pron`, `pos`, `occupation`, `a_occupation`, `workplace`,
/// `town`, `feature_phrase`, `pet`, `a_pet`, `food`, `colour`.
pub fn person(p: &Person, world: &World) -> Slots {
    let d = data();
    let workplace = d.occupation(&p.occupation).map(|o| o.workplace.clone()).unwrap_or_default();
    let feature_phrase = world.town(&p.town).map(|t| t.feature_phrase.clone()).unwrap_or_default();
    let mut s = Slots::new();
    s.set("name", p.name.clone())
        .set("full", p.full())
        .set("surname", p.surname.clone())
        .set("pron", p.gender.pronoun())
        .set("pos", p.gender.possessive())
        .set("occupation", p.occupation.clone())
        .set("a_occupation", with_article(&p.occupation))
        .set("workplace", workplace)
        .set("town", p.town.clone())
        .set("feature_phrase", feature_phrase)
        .set("pet", p.pet.clone())
        .set("a_pet", with_article(&p.pet))
        .set("food", p.food.clone())
        .set("colour", p.colour.clone());
    s
}
