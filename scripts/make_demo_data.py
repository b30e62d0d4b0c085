"""Generate the small demo data set shipped in ``mtl_hf/demo_data/`` (used by ``run_mtl.py`` without ``--tasks``).

What: two tasks sharing one encoder, written for this project (no sentence is copied from any corpus)::

    mtl_hf/demo_data/
        topic/{train,validation,test}.jsonl   headline-like sentences, {"text": ..., "label": ...}, 4 balanced labels
        ner/{train,validation,test}.conll     "word TAG" lines, blank line between sentences, IOB2 PER/ORG/LOC tags
        tasks.yaml                            the task file naming both tasks (paths relative to its folder)
        README.md                             what the data is, sizes, label sets, license

How: every sentence is built from hand-written templates filled from hand-written word lists (invented people and
companies; real city, country, river and mountain names). Each word list, and each topic label's template list, is
shuffled once and cut into a part shared by all splits (60%), a train-only part (20%) and an evaluation-only part
(20%): train sentences draw from shared + train-only, validation and test from shared + evaluation-only, so the
evaluation splits contain fillers (names, companies, places, topic words) and headline patterns never seen in
training and measure some generalisation, while the shared templates keep the tasks learnable (the NER templates are
all shared). No sentence occurs twice, within or across splits.

Deterministic: all randomness comes from ``random.Random`` objects seeded from ``--seed``, and the files are written
with ``\\n`` line endings, so running the script again reproduces byte-identical files. The written files are then
checked (JSONL parses, labels balanced, CoNLL lines have exactly two columns, tags are valid IOB2).

Standard library only. Run: ``python scripts/make_demo_data.py [--seed 13] [--out_dir mtl_hf/demo_data]``.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

SEED = 13
SPLITS = ("train", "validation", "test")
# Sentences per split; topic sizes are per label (4 labels -> 400 / 80 / 80).
TOPIC_PER_LABEL = {"train": 100, "validation": 20, "test": 20}
NER_SIZES = {"train": 400, "validation": 80, "test": 80}
NER_NO_ENTITY_SHARE = 0.1  # share of NER sentences drawn from the templates without entities
SHARED_SHARE, TRAIN_ONLY_SHARE = 0.6, 0.2  # the rest of each word list is evaluation-only
ENTITY_TYPES = ("PER", "ORG", "LOC")
DEFAULT_OUT_DIR = Path(__file__).resolve().parent.parent / "mtl_hf" / "demo_data"

SLOT = re.compile(r"\{(\w+)\}")

# ----------------------------------------------------------------------------------------------------------------
# Word lists shared by both tasks
# ----------------------------------------------------------------------------------------------------------------

FIRST_NAMES = """
Maria Jonas Aisha Kenji Priya Lucas Elena Tomasz Fatima Oliver Ingrid Mateo Amara Daniel Sofia Hiroshi Chloe Nikolai
Leila Samuel Greta Rafael Yuki Hannah Omar Clara Viktor Nadia Felix Zara Andre Mei Lars Imani Paolo Eva Tariq Julia
Sven Alina Marco Noor Henrik Rosa Kwame Lena Diego Ayla Pieter Sara Ravi Mila Emil Bianca Kofi Ines Stefan Lucia Arjun
Freya Mateus Hana Oskar Leticia Ruben Selin Tobias Anya Idris Camille Bruno Esther Joaquin Marta Anders Nia Gustav
""".split()

SURNAMES = """
Keller Okafor Lindqvist Moreau Tanaka Brennan Castellano Novak Haddad Fischer Oyelaran Petrov Sandoval Whitcombe
Aldana Brandt Delacroix Eriksen Fontaine Garber Halloran Ivers Jankowski Kowalczyk Larkin Nakamura Ortega Pellegrini
Quint Rasmussen Sato Thorne Ueda Valdez Yilmaz Zeller Abernathy Marchetti Osei Vasquez Lindgren Achterberg Duval
Ferreira Gallagher Hoffmann Ibarra Kaminski Mbatha Nyberg Okonkwo Pereira Rinaldi Szabo Takahashi Varga Wexford
Amadi Bergstrom Carvalho Dimitrov Esposito Fenwick Grunewald Holloway Iqbal Juarez Kristiansen
""".split()

# Real places. Multi-word names are written with spaces and become B-LOC I-LOC ... in the NER data.
CITIES = [
    "Lyon", "Oslo", "Nairobi", "Lima", "Osaka", "Porto", "Krakow", "Dublin", "Accra", "Hanoi", "Quito", "Tunis",
    "Seville", "Bergen", "Hamburg", "Montreal", "Adelaide", "Chennai", "Manila", "Valencia", "Gdansk", "Leeds",
    "Turin", "Cork", "Tallinn", "Riga", "Vilnius", "Marseille", "Boston", "Denver", "Toronto", "Melbourne", "Mumbai",
    "Cairo", "Izmir", "Bogota", "Santiago", "Lagos", "Kyoto", "Busan", "Perth", "Geneva", "Zurich", "Antwerp",
    "Rotterdam", "Bilbao", "Naples", "Glasgow", "Halifax", "Calgary", "New York", "Buenos Aires", "Rio de Janeiro",
    "Cape Town", "Hong Kong", "Kuala Lumpur", "San Francisco", "Mexico City", "Sao Paulo", "Addis Ababa",
    "Los Angeles", "New Delhi", "Abu Dhabi", "Ho Chi Minh City",
]
COUNTRIES = [
    "France", "Norway", "Kenya", "Peru", "Japan", "Portugal", "Poland", "Ireland", "Ghana", "Vietnam", "Ecuador",
    "Tunisia", "Spain", "Germany", "Canada", "Australia", "India", "Italy", "Estonia", "Latvia", "Chile", "Nigeria",
    "Brazil", "Egypt", "Colombia", "Argentina", "Mexico", "Morocco", "Sweden", "Finland", "Austria", "Uruguay",
    "South Korea", "New Zealand", "Sri Lanka", "Costa Rica", "South Africa", "the Netherlands", "the United States",
    "the Philippines",
]
RIVERS = ["Danube", "Rhine", "Thames", "Nile", "Mekong", "Loire", "Vistula", "Seine", "Douro", "Elbe", "Tagus"]
MOUNTAINS = [
    "Alps", "Andes", "Pyrenees", "Carpathians", "Rockies", "Dolomites", "Atlas Mountains", "Tatra Mountains",
    "Scottish Highlands", "Blue Mountains",
]

# Invented organisations: "<word> <suffix>" companies, "<word> <kind>" institutions and one-word brands.
ORG_WORDS = """
Northwind Bluefield Halvard Corvane Tessaro Meridian Oakhurst Pellucid Quayside Ravelin Solace Vantor Wexley Yarrow
Zephyr Ashgrove Bellamy Cobalt Dunmore Elmstead Fairhaven Greystone Hollis Ironvale Juniper Kestrel Lumen Marlowe
Nettle Orrin Pinecrest Quillon Redfern Silverline Thornbury Veridian Westbrook Amberly Brightwater Calloway Dovetail
Emberly Foxglove Glenmore Harrowgate Inkwell Larchmont Mossgrove Nightjar Oldcastle Pembrook Ridgeway Saltmarsh
""".split()
ORG_SUFFIXES = """
Systems Labs Group Holdings Foods Motors Energy Bank Media Robotics Partners Logistics Pharma Airlines Studios
Insurance Textiles Analytics Capital Networks Software Biotech Shipping Telecom
""".split()
INSTITUTION_KINDS = ["University", "Institute", "Foundation", "Hospital", "Trust", "College", "Council"]
BRANDS = """
Quorvex Zentara Plumbo Vexilon Tavlo Omnexa Brivio Kandor Lumio Fennix Arvato Sorello Dravix Nuvola Pexa Trelli
Gorvin Hexabel Mirova Ostrin
""".split()

MONTHS = "January February March April May June July August September October November December".split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()


# ----------------------------------------------------------------------------------------------------------------
# Topic classification: templates and word lists per label
# ----------------------------------------------------------------------------------------------------------------

# Fillers used by every label (they carry no label information).
TOPIC_COMMON: dict[str, list[str]] = {
    "time": [
        "this week", "on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday", "over the weekend",
        "this year", "for the first time", "after a long wait", "this month", "so far this season", "again",
    ],
    "money": [
        "{m} million dollars", "{b} billion dollars", "{m} million euros", "{b} billion euros", "{m} million pounds",
    ],
}

TOPIC: dict[str, dict[str, list[str]]] = {
    "business": {
        "templates": [
            "{company} says {metric} {rises} {pct} percent {time}",
            "{company} says {metric} {falls} {pct} percent as costs rise",
            "Shares of {company} {up} after {metric} beats forecasts",
            "Shares of {company} {down} after a weak {quarter} quarter",
            "{company} agrees to a {deal} with {company} worth {money}",
            "{institution} expects {econ} to {trend} next year",
            "{company} to cut {jobs} jobs as demand for {product} weakens",
            "{company} plans to open {small} new stores in {city}",
            "{sector} warn of higher costs as {econ} keeps rising",
            "{company} names a new {exec} after {quarter} quarter losses",
            "Investors welcome {company} {deal} worth {money}",
            "{company} raises its dividend after strong {metric}",
            "{trended} in {month}, official figures show",
            "{company} shelves plans for a factory in {city} amid slowing demand",
            "Analysts cut their price target for {company} on weaker {metric}",
            "{company} files for bankruptcy protection after years of losses",
            "{company} prices its stock market debut at {money}",
            "{company} recalls {jobs} {product} over safety concerns",
            "The central bank raises interest rates to cool {econ}",
            "{sector} report record {metric} despite {econ}",
            "Tax changes hit {sector} harder than expected",
            "{exec} of {company} steps down after {deal} collapses",
            "{company} moves its headquarters to {city} to cut costs",
            "Profit warning from {company} drags down {sector}",
            "Record profits at {company} as {product} sales soar",
            "{company} launches {product} in {city} to win back customers",
            "Sportswear retailer {company} warns that profits will fall",
            "Ticket seller {company} loses market share to smaller rivals",
            "{company} wins a {money} contract to supply {product}",
        ],
        "company": [
            "Northwind Systems", "Halvard Foods", "Brightline Retail", "Corvane Motors", "Tessaro Bank",
            "Meridian Freight", "Oakhurst Energy", "Pellucid Pharma", "Quayside Insurance", "Ravelin Steel",
            "Solace Airlines", "Tamsin Textiles", "Vantor Telecom", "Wexley Holdings", "Yarrow Logistics",
            "Zephyr Chemicals", "Ashgrove Mining", "Bellamy Brewing", "Cobalt Ridge Capital", "Dunmore Shipping",
            "Elmstead Properties", "Fairhaven Hotels", "Greystone Cement", "Juniper Payments", "Kestrel Appliances",
        ],
        "metric": [
            "quarterly profit", "annual revenue", "operating margin", "net income", "first-half sales",
            "full-year earnings", "online sales", "cash flow", "export revenue", "retail sales",
        ],
        "up": ["jump", "climb", "rise", "surge", "grow"],
        "down": ["fall", "slide", "drop", "shrink", "slump"],
        "rises": ["jumps", "climbs", "rises", "surges", "grows"],
        "falls": ["falls", "slides", "drops", "shrinks", "slumps"],
        "quarter": ["first", "second", "third", "fourth"],
        "deal": [
            "merger", "takeover", "acquisition", "joint venture", "buyout", "supply agreement", "licensing deal",
            "asset sale",
        ],
        "institution": [
            "The central bank", "The finance ministry", "The competition regulator", "The statistics office",
            "The chief economist", "The trade association", "The budget office", "The banking watchdog",
        ],
        "econ": [
            "inflation", "unemployment", "consumer spending", "export orders", "factory output", "housing prices",
            "the trade deficit", "bond yields", "wage growth", "fuel prices",
        ],
        "trend": ["ease", "slow", "pick up", "stabilise", "fall sharply", "rise further"],
        "trended": ["Inflation eased", "Factory output fell", "Retail sales rose", "Unemployment climbed",
                    "Exports recovered", "Consumer confidence slipped", "Housing starts dropped",
                    "Wage growth slowed"],
        "product": [
            "electric scooters", "washing machines", "office furniture", "laptops", "frozen meals", "car tyres",
            "kitchen blenders", "solar panels", "running shoes", "baby car seats",
        ],
        "sector": [
            "steel makers", "regional banks", "car makers", "airlines", "online retailers", "chip suppliers",
            "home builders", "food producers", "shipping firms", "insurers", "small businesses", "energy companies",
        ],
        "exec": ["chief executive", "finance chief", "chairman", "chairwoman", "managing director", "board chair"],
        "jobs": ["{jobs}"],
        "pct": ["{pct}"],
        "small": ["{small}"],
    },
    "sport": {
        "templates": [
            "{team} {beat} {team} {score} to reach {stage}",
            "{role} {person} scores twice as {team} {beat} {team}",
            "{person} wins {stage} in straight sets",
            "{team} sack their coach after {small} straight defeats",
            "{role} {person} ruled out for {small} weeks with a {body} injury",
            "{person} breaks the national record in the {distance} metres",
            "{team} sign {role} {person} on a {small}-year contract",
            "{team} fans celebrate the first {trophy} in {small} years",
            "{person} retires from international {sportname} at {age}",
            "A late penalty gives {team} victory over {team}",
            "{team} stay top of the table after a goalless draw with {team}",
            "{person} claims gold in the {event} at the {champ}",
            "Referee's decision sparks anger as {team} lose {score} to {team}",
            "{person} sets a course record to win the {city} marathon",
            "{team} name {person} as captain for the new season",
            "Rain delays {stage} between {team} and {team}",
            "{team} come from behind to {beat} {team} {score} {time}",
            "{person} knocked out of {stage} by a teenage qualifier",
            "{team} complete the signing of {role} {person} from {team}",
            "{person} finishes second in the {distance} metres after a photo finish",
            "Injury-hit {team} hold {team} to a {draw} draw",
            "{person} will miss the {champ} after failing a fitness test",
            "Unbeaten {team} extend their winning run to {small} matches",
            "{team} coach praises young {role} after {score} win",
            "{team} unveil plans for a new stadium worth {money}",
            "{role} {person} signs a record sponsorship deal",
            "{person} stars as {team} launch their title challenge",
            "Sports scientists clear {person} to return after tests on the {body}",
            "{team} sell out their stadium for the first time in {small} years",
        ],
        "team": [
            "Harbor City", "Redbrook United", "Kingsford Rovers", "Alder Vale", "Westmere Athletic",
            "Stonebridge Rangers", "Port Averly", "Marlow Town", "Eastfield Wanderers", "Crestwood Falcons",
            "Lakeside Hornets", "Granite Bay Sharks", "Millbrook Albion", "Northgate City", "Saltford Pirates",
            "Tarrow Valley", "Oakmere Lions", "Briar Park Rovers", "Hollow Creek Comets", "Fenmoor United",
        ],
        "beat": ["beat", "thrash", "edge past", "stun", "outclass", "overpower", "see off"],
        "stage": [
            "the cup final", "the semi-finals", "the league title decider", "the quarter-finals",
            "the national championship", "the play-off final", "the season opener", "the open final",
        ],
        "role": [
            "striker", "goalkeeper", "midfielder", "captain", "sprinter", "defender", "winger", "point guard",
            "fly-half", "wicketkeeper", "playmaker", "veteran forward",
        ],
        "body": ["hamstring", "knee", "ankle", "shoulder", "calf", "groin", "back", "wrist"],
        "distance": ["100", "200", "400", "800", "1500", "5000", "10,000"],
        "trophy": ["league title", "cup win", "championship", "promotion", "trophy", "national title"],
        "sportname": ["football", "rugby", "cricket", "hockey", "athletics", "basketball", "volleyball", "tennis"],
        "age": ["{age}"],
        "event": [
            "long jump", "high jump", "triple jump", "javelin", "pole vault", "200 metres freestyle", "road race",
            "time trial", "giant slalom", "mixed doubles", "singles final", "steeplechase",
        ],
        "champ": [
            "world championships", "European championships", "Commonwealth Games", "indoor championships",
            "national trials", "continental games", "junior world championships",
        ],
        "small": ["{small}"],
    },
    "science": {
        "templates": [
            "{scientists} discover {species} in {habitat}",
            "{instrument} sends back the first images of {celestial}",
            "Study links {factor} to {health}",
            "{scientists} map {topic} using {method}",
            "New {material} could make {tech} {better}",
            "Fossil of {fossil} found in {country} rewrites the history of {group}",
            "Launch of the {mission} delayed by a fuel leak",
            "{scientists} sequence the genome of {organism}",
            "Experiment measures {quantity} with record precision",
            "Clinical trial shows {drug} slows {disease}",
            "{scientists} warn that {topic} is changing faster than expected",
            "{instrument} spots water vapour on {celestial}",
            "{scientists} grow {tissue} in the lab for the first time",
            "Ancient {artifact} reveal how early farmers {activity}",
            "Quantum {device} keeps qubits stable for {small} seconds",
            "{scientists} find that {organism} can {ability}",
            "Satellite data show {topic} shrinking {time}",
            "Researchers train robots to {robotask} using {method}",
            "{instrument} detects {signal} from {celestial}",
            "Volcanic eruption gives {scientists} rare data on {topic}",
            "Gene therapy restores {sense} in {animal} study",
            "Engineers create a battery that charges in {small} minutes",
            "Deep-sea expedition finds {species} near {habitat}",
            "Study of {organism} sheds light on {topic}",
            "Study finds music lowers stress in {animal} experiments",
            "Scientists record the loudest sound ever made by {organism}",
            "Heart rates of football fans studied to understand {health}",
            "Company-funded study of {drug} passes safety review",
            "Engineers test whether {tech} can survive a winter in Antarctica",
        ],
        "scientists": [
            "astronomers", "biologists", "physicists", "geologists", "a team of chemists", "climate scientists",
            "engineers", "marine biologists", "neuroscientists", "ecologists", "researchers in {country}",
            "palaeontologists",
        ],
        "species": [
            "a new species of frog", "a glowing mushroom", "a tiny seahorse", "a blind cave fish",
            "an unknown beetle", "a rare orchid", "a new species of gecko", "a colourful sea slug",
            "a carnivorous plant", "a giant isopod",
        ],
        "habitat": [
            "a remote rainforest", "a flooded cave", "the cloud forest", "a volcanic island", "a mountain lake",
            "hydrothermal vents", "a mangrove swamp", "coastal dunes",
        ],
        "instrument": [
            "The space telescope", "A lunar probe", "The Mars rover", "A weather satellite", "A radio telescope",
            "An orbiting observatory", "A solar probe", "The comet lander",
        ],
        "celestial": [
            "a distant galaxy", "an icy moon", "a young star", "a nearby exoplanet", "the far side of the Moon",
            "a dwarf planet", "a comet tail", "a black hole", "a star-forming cloud",
        ],
        "factor": [
            "poor sleep", "air pollution", "daily walking", "screen time", "a diet rich in fibre", "loneliness",
            "noise from traffic", "gut bacteria",
        ],
        "health": [
            "memory loss", "heart disease", "better mood", "a longer life", "weaker bones", "faster healing",
            "lower blood pressure", "childhood asthma",
        ],
        "topic": [
            "ocean currents", "coral reefs", "glacier melt", "soil bacteria", "bird migration", "sea ice",
            "volcanic activity", "permafrost", "dark matter", "solar flares", "the immune system", "brain activity",
        ],
        "method": [
            "machine learning", "drone surveys", "satellite images", "DNA samples", "ice cores", "sonar",
            "tiny sensors", "computer simulations",
        ],
        "material": [
            "ceramic", "polymer", "alloy", "coating", "crystal", "membrane", "aerogel", "graphene sheet",
        ],
        "tech": [
            "solar cells", "batteries", "water filters", "computer chips", "jet engines", "wind turbines",
            "medical implants",
        ],
        "better": ["cheaper", "twice as efficient", "lighter", "safer", "more durable", "easier to recycle"],
        "fossil": [
            "a feathered dinosaur", "an early whale", "a giant penguin", "a flying reptile", "an ancient shark",
            "a tiny mammal", "a sea scorpion",
        ],
        "country": ["Argentina", "Mongolia", "Morocco", "Canada", "China", "Australia", "Portugal", "Madagascar"],
        "group": ["birds", "mammals", "early fish", "reptiles", "insects", "flowering plants"],
        "mission": [
            "lunar lander", "asteroid probe", "Mars sample mission", "space station resupply", "weather satellite",
            "solar observatory",
        ],
        "organism": [
            "the axolotl", "wheat", "the honeybee", "the octopus", "a deep-sea sponge", "the tardigrade",
            "the sea urchin", "a desert lizard", "the naked mole rat",
        ],
        "quantity": [
            "the mass of the neutrino", "the speed of sound in ice", "the gravitational constant",
            "the age of the universe", "the size of the proton",
        ],
        "drug": ["an experimental drug", "a new vaccine", "a cheap blood thinner", "a nasal spray", "an antibody"],
        "disease": ["dementia", "malaria", "kidney disease", "a rare form of blindness", "muscle wasting"],
        "tissue": ["heart muscle", "a tiny liver", "tooth enamel", "spinal cord tissue", "a working kidney"],
        "artifact": ["pottery shards", "grain stores", "stone tools", "seeds", "cooking pots", "animal bones"],
        "activity": ["stored food", "tamed animals", "brewed beer", "made bread", "grew rice"],
        "device": ["chip", "processor", "memory cell", "sensor"],
        "ability": [
            "regrow lost limbs", "survive without oxygen", "recognise faces", "count to four", "sense magnetic fields",
            "live for centuries",
        ],
        "robotask": ["fold laundry", "sort waste", "pick fruit", "climb stairs", "assemble furniture"],
        "signal": ["radio bursts", "gamma rays", "methane", "faint X-rays", "gravitational waves"],
        "sense": ["hearing", "sight", "smell", "touch"],
        "animal": ["mouse", "monkey", "zebrafish", "dog"],
        "small": ["{small}"],
    },
    "entertainment": {
        "templates": [
            "{film} tops the box office in its opening weekend",
            "{role} {person} to star in a sequel to {film}",
            "{band} announce a {small}-date world tour",
            "{person} wins a best acting award for {film}",
            "Streaming series {show} renewed for a {ordinal} season",
            "{band} release their first album in {small} years",
            "{role} {person} confirms engagement to {role} {person}",
            "Critics praise {film} at {festival}",
            "{role} {person} cancels concerts due to illness",
            "Director {person} reveals the cast of {film}",
            "Fans queue overnight for {band} concert tickets",
            "Final episode of {show} draws a record audience",
            "{person} to host {awards} next spring",
            "Musical based on {film} opens on stage in {city}",
            "{person} says new memoir tells the story behind {film}",
            "{band} top the charts with {song}",
            "{film} leads the nominations for {awards}",
            "{role} {person} joins the cast of {show}",
            "Ticket sales for {festival} break records",
            "{song} by {band} becomes the most streamed song of the summer",
            "Reality show {show} cancelled after {small} seasons",
            "{person} wins a television award for a role in {show}",
            "{band} headline {festival} {time}",
            "Trailer for {film} gets millions of views in a day",
            "Box office takings for {film} top {money}",
            "{role} {person} plays an astronaut in the space drama {film}",
            "{band} guitarist sets a world record for the longest concert",
            "Former footballer {person} wins the dance contest on {show}",
            "{role} {person} launches a perfume brand in {city}",
        ],
        "film": [
            "The Silent Harbour", "Midnight Orchard", "Paper Kingdoms", "Glass River", "The Last Lantern",
            "Winter Carnival", "Copper Sky", "A House of Echoes", "The Velvet Road", "Salt and Thunder",
            "Neon Pilgrims", "The Clockmaker's Daughter", "Summer of Foxes", "Blue Lanterns", "Iron Petals",
            "The Quiet Comet",
        ],
        "show": [
            "Crown of Ash", "Night Shift Diaries", "The Lighthouse Cooks", "Border Town", "Dream Kitchen",
            "Island Escape", "The Apartment Files", "Brothers of Fenn", "Starlight Talent Hunt", "Rooftop Rivals",
        ],
        "band": [
            "The Velvet Tides", "Northern Static", "Copper Moths", "Paper Lions", "The Midnight Ferries",
            "Glass Animals Choir", "Silver Porch", "The Hollow Drums", "Lantern Ghosts", "Sugar Harbour",
            "The Ribbon Twins", "Echo Canyon",
        ],
        "song": [
            "Golden Hour", "Paper Heart", "Dancing in Lyon", "Neon Rain", "Slow Tide", "Satellite Love",
            "Midnight Train", "Sweet Static", "Honey Moon", "Empty Streets",
        ],
        "role": [
            "actor", "dancer", "singer", "pop star", "comedian", "rapper", "songwriter", "film maker",
            "country singer", "talk show host",
        ],
        "ordinal": ["second", "third", "fourth", "fifth", "sixth", "final"],
        "festival": [
            "the film festival", "the summer music festival", "the jazz festival", "the comedy festival",
            "the autumn film festival", "the folk festival",
        ],
        "awards": [
            "the film awards", "the music awards", "the television awards", "the comedy awards",
            "the critics' awards",
        ],
        "small": ["{small}"],
    },
}

# ----------------------------------------------------------------------------------------------------------------
# NER: templates. {PER} full name, {SUR} surname alone (after a title), {FIRST} first name alone, {ORG} any
# organisation, {COMPANY} company or brand, {SCHOOL} institution, {CITY}, {COUNTRY}, {RIVER}, {MOUNTAINS} places,
# {LOC} any place. Lower-case slots are fillers tagged O. Tokens are separated by single spaces.
# ----------------------------------------------------------------------------------------------------------------

NER_TEMPLATES = [
    "{PER} joined {COMPANY} in {CITY} {time} .",
    "{COMPANY} has appointed {PER} as its new {role} .",
    "{PER} , the {role} of {COMPANY} , said the company would expand into {COUNTRY} .",
    "Speaking in {CITY} on {weekday} , {PER} said the talks had gone well .",
    "{COMPANY} opened new offices in {CITY} and {CITY} .",
    "The minister met {PER} and {PER} at the {COMPANY} headquarters in {CITY} .",
    "{CITY} will host the conference for the first time since {year} .",
    "Dr. {SUR} told reporters that the results were encouraging .",
    "{PER} grew up in {CITY} before moving to {COUNTRY} .",
    "Shares in {COMPANY} fell {num} percent on {weekday} .",
    "{COMPANY} and {COMPANY} signed a supply agreement {time} .",
    "According to {PER} , prices in {COUNTRY} will keep rising .",
    "The flight from {CITY} to {CITY} was delayed by {small} hours .",
    "{PER} has worked for {ORG} since {year} .",
    "A spokesperson for {ORG} declined to comment .",
    "\" We are proud of the team , \" said {PER} .",
    "{FIRST} and a friend opened a bakery near {CITY} .",
    "Heavy rain closed several roads between {CITY} and {CITY} .",
    "{COMPANY} reported higher sales in {COUNTRY} and {COUNTRY} .",
    "The new bridge over the {RIVER} was designed by {PER} .",
    "{PER} ( {ORG} ) won the prize for best {prize} .",
    "Ms. {SUR} will lead the {COMPANY} team in {CITY} .",
    "{COMPANY} plans to build a factory outside {CITY} .",
    "Born in {COUNTRY} , {PER} studied law in {CITY} .",
    "Tourists in {CITY} can now {tour} .",
    "{PER} 's new book is about growing up in {CITY} .",
    "{COMPANY} 's {role} , {PER} , resigned on {weekday} .",
    "Visitors from {COUNTRY} made up a third of all guests last year .",
    "{PER} will travel to {CITY} next week to meet officials from {ORG} .",
    "The museum in {CITY} received a large donation from {ORG} .",
    "Interview : {PER}",
    "{COMPANY} to open {small} stores in {COUNTRY}",
    "Professor {PER} of {SCHOOL} leads the study .",
    "Fans gathered in {CITY} to see {PER} perform .",
    "{PER} beat {PER} in the final in {CITY} .",
    "{CITY} - {COMPANY} said on {weekday} it would cut {num} jobs .",
    "Mountain guides in the {MOUNTAINS} expect a busy season .",
    "{PER} and {PER} founded {COMPANY} in {year} .",
    "Talks between {COUNTRY} and {COUNTRY} ended without an agreement .",
    "She moved to {CITY} to work for {ORG} .",
    "The report was written by {PER} , {PER} and {PER} .",
    "{COMPANY} customers in {CITY} lost power for {small} hours .",
    "Mr. {SUR} said {COMPANY} had no plans to leave {COUNTRY} .",
    "A team from {SCHOOL} spent {month} studying fish in the {RIVER} .",
    "Prices for flats in {CITY} rose {num} percent , {ORG} said .",
    "{PER} is the youngest person ever to run {SCHOOL} .",
    "Last year {PER} sold {COMPANY} to {COMPANY} .",
    "The festival in {LOC} attracts visitors from {COUNTRY} and {COUNTRY} .",
    "Hikers crossing the {MOUNTAINS} were warned about snow .",
    "{ORG} will sponsor the marathon in {CITY} until {future} .",
    "Police in {CITY} are looking for witnesses .",
    "{PER} thanked {ORG} for its support .",
    "Exports from {COUNTRY} to {COUNTRY} doubled in {year} .",
    "A new rail line will link {CITY} and {CITY} by {future} .",
    "{PER} , who coaches at {SCHOOL} , has been named coach of the year .",
    "Engineers at {COMPANY} in {CITY} built the prototype in {small} months .",
    "Coach {SUR} was pleased with the result .",
    "The {role} of {COMPANY} is {PER} .",
    "On {weekday} , {ORG} announced a partnership with {ORG} .",
    "Floods along the {RIVER} forced hundreds of families to leave their homes .",
]

NER_NO_ENTITY_TEMPLATES = [
    "The meeting was moved to {weekday} afternoon .",
    "Prices rose by {num} percent in {month} .",
    "Nobody was injured in the fire , officials said .",
    "The company expects sales to recover in {future} .",
    "Most shops will stay open during the holiday on {weekday} .",
    "The weather is expected to improve by the weekend , forecasters said .",
    "Tickets sold out within {small} minutes .",
    "The new rules take effect in {month} .",
    "She said the project would take at least {small} years .",
    "Several trains were cancelled on {weekday} because of the storm .",
    "The council will vote on the plan in {month} .",
    "About {num} people attended the opening on {weekday} .",
    "He has worked as a {role} for {small} years .",
    "The {role} said profits would fall {time} .",
    "Water levels are lower than in {year} , the report says .",
]

NER_FILLERS: dict[str, list[str]] = {
    "time": [
        "last spring", "last autumn", "in {month}", "in {year}", "two years ago", "last week", "earlier this month",
        "in early {year}", "in late {month}", "this year", "after the summer",
    ],
    "role": [
        "chief executive", "finance director", "head of research", "spokesperson", "chairwoman", "lead engineer",
        "sales manager", "general counsel", "chief technology officer", "managing director",
    ],
    "tour": [
        "visit the old harbour by boat", "climb the cathedral tower", "rent bicycles at the station",
        "buy a weekly museum pass", "take a night tour of the market", "swim in the public baths",
    ],
    "prize": ["design", "short film", "debut novel", "documentary", "photograph", "new product"],
}


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def split_pool(items: Sequence[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """Shuffle ``items`` and return ``(train_pool, eval_pool)``: both hold the shared 60%, plus the train-only and
    the evaluation-only 20% respectively. Lists under 5 items are not cut (both pools are the whole list)."""
    items = list(items)
    if len(items) < 5:
        return items, items
    rng.shuffle(items)
    n_shared = round(len(items) * SHARED_SHARE)
    n_train_only = round(len(items) * TRAIN_ONLY_SHARE)
    shared, train_only, eval_only = (
        items[:n_shared],
        items[n_shared : n_shared + n_train_only],
        items[n_shared + n_train_only :],
    )
    return shared + train_only, shared + eval_only


def number_filler(name: str, rng: random.Random) -> str | None:
    """Random numbers and dates for the numeric slots; ``None`` if ``name`` is not one."""
    if name == "pct":
        return str(rng.randint(2, 45))
    if name == "small":
        return str(rng.randint(2, 12))
    if name == "jobs":
        return f"{rng.randint(2, 60) * 50:,}"
    if name == "num":
        return str(rng.choice([rng.randint(2, 30), rng.randint(2, 90) * 10]))
    if name == "m":
        return str(rng.randint(2, 95) * 10)
    if name == "b":
        return f"{rng.randint(11, 95) / 10:g}"
    if name == "score":  # winner first
        winner = rng.randint(1, 6)
        return f"{winner}-{rng.randint(0, winner - 1)}"
    if name == "draw":
        goals = rng.randint(0, 4)
        return f"{goals}-{goals}"
    if name == "age":
        return str(rng.randint(29, 38))
    if name == "year":
        return str(rng.randint(1995, 2023))
    if name == "future":
        return str(rng.randint(2026, 2035))
    if name == "month":
        return rng.choice(MONTHS)
    if name == "weekday":
        return rng.choice(WEEKDAYS)
    return None


def template_plan(templates: Sequence[str], count: int, rng: random.Random) -> list[str]:
    """``count`` templates that use each template about equally often (whole shuffled rounds, then a random part
    of one more round)."""
    plan: list[str] = []
    while len(plan) < count:
        round_ = list(templates)
        rng.shuffle(round_)
        plan += round_
    return plan[:count]


def fill(template: str, choose: Callable[[str], str], rng: random.Random) -> str:
    """Replace every ``{slot}`` of ``template`` (recursively, as fillers may hold slots) with ``choose(slot)`` or a
    number; a slot repeated in one sentence gets different values where the list allows it."""
    used: dict[str, set[str]] = {}

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        number = number_filler(name, rng)
        if number is not None:
            return number
        value = choose(name)
        for _ in range(20):
            if value not in used.setdefault(name, set()):
                break
            value = choose(name)
        used[name].add(value)
        return value

    text = template
    while SLOT.search(text):
        text = SLOT.sub(replace, text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# Topic classification
# ----------------------------------------------------------------------------------------------------------------


def make_topic(seed: int) -> dict[str, list[dict[str, str]]]:
    """Return ``{split: [{"text", "label"}, ...]}``, balanced per split, no text repeated anywhere."""
    rng = random.Random(f"{seed}:topic")
    pool_rng = random.Random(f"{seed}:topic-pools")
    people_train, people_eval = split_pool([f"{f} {s}" for f, s in zip(FIRST_NAMES, reversed(SURNAMES))], pool_rng)
    cities_train, cities_eval = split_pool(CITIES, pool_rng)
    pools: dict[str, dict[str, tuple[list[str], list[str]]]] = {}
    for label, lists in TOPIC.items():
        pools[label] = {"person": (people_train, people_eval), "city": (cities_train, cities_eval)}
        for name, items in {**TOPIC_COMMON, **lists}.items():
            pools[label][name] = split_pool(items, pool_rng)  # the templates are cut like the word lists

    seen: set[str] = set()
    out: dict[str, list[dict[str, str]]] = {}
    for split in SPLITS:
        which = 0 if split == "train" else 1
        rows: list[dict[str, str]] = []
        for label in TOPIC:
            templates = pools[label]["templates"][which]
            for template in template_plan(templates, TOPIC_PER_LABEL[split], rng):
                while True:
                    text = fill(template, lambda name: rng.choice(pools[label][name][which]), rng)
                    text = text[0].upper() + text[1:]
                    if text.lower() not in seen:
                        break
                    template = rng.choice(templates)  # this one may be exhausted: try another
                seen.add(text.lower())
                rows.append({"text": text, "label": label})
        rng.shuffle(rows)
        out[split] = rows
    return out


# ----------------------------------------------------------------------------------------------------------------
# NER
# ----------------------------------------------------------------------------------------------------------------


def entity_tokens(value: str, entity_type: str) -> list[tuple[str, str]]:
    """Tag a (possibly multi-word) entity in IOB2; a leading "the" stays outside the entity."""
    words = value.split()
    tagged: list[tuple[str, str]] = []
    if words[0] == "the":
        tagged.append(("the", "O"))
        words = words[1:]
    tagged += [(word, ("B-" if i == 0 else "I-") + entity_type) for i, word in enumerate(words)]
    return tagged


def make_ner(seed: int) -> dict[str, list[list[tuple[str, str]]]]:
    """Return ``{split: [[(word, tag), ...], ...]}`` with no sentence repeated anywhere."""
    rng = random.Random(f"{seed}:ner")
    pool_rng = random.Random(f"{seed}:ner-pools")
    firsts = split_pool(FIRST_NAMES, pool_rng)
    surnames = split_pool(SURNAMES, pool_rng)
    org_words = split_pool(ORG_WORDS, pool_rng)
    brands = split_pool(BRANDS, pool_rng)
    cities = split_pool(CITIES, pool_rng)
    countries = split_pool(COUNTRIES, pool_rng)
    rivers = split_pool(RIVERS, pool_rng)
    mountains = split_pool(MOUNTAINS, pool_rng)
    fillers = {name: split_pool(items, pool_rng) for name, items in NER_FILLERS.items()}

    def entity(name: str, which: int) -> tuple[str, str]:
        """Draw a value for an entity slot: ``(text, type)``."""
        if name == "PER":
            return f"{rng.choice(firsts[which])} {rng.choice(surnames[which])}", "PER"
        if name == "SUR":
            return rng.choice(surnames[which]), "PER"
        if name == "FIRST":
            return rng.choice(firsts[which]), "PER"
        if name == "COMPANY":
            if rng.random() < 0.25:
                return rng.choice(brands[which]), "ORG"
            return f"{rng.choice(org_words[which])} {rng.choice(ORG_SUFFIXES)}", "ORG"
        if name == "SCHOOL":
            roll = rng.random()
            if roll < 0.2:
                return f"University of {rng.choice(cities[which])}", "ORG"
            if roll < 0.35:
                return f"the {rng.choice(org_words[which])} {rng.choice(INSTITUTION_KINDS)}", "ORG"
            return f"{rng.choice(org_words[which])} {rng.choice(INSTITUTION_KINDS)}", "ORG"
        if name == "ORG":
            return entity("COMPANY" if rng.random() < 0.65 else "SCHOOL", which)
        if name == "CITY":
            return rng.choice(cities[which]), "LOC"
        if name == "COUNTRY":
            return rng.choice(countries[which]), "LOC"
        if name == "RIVER":
            return rng.choice(rivers[which]), "LOC"
        if name == "MOUNTAINS":
            return rng.choice(mountains[which]), "LOC"
        if name == "LOC":
            return entity("CITY" if rng.random() < 0.6 else "COUNTRY", which)
        raise KeyError(name)

    def sentence(template: str, which: int) -> list[tuple[str, str]]:
        tagged: list[tuple[str, str]] = []
        used: set[str] = set()
        for token in template.split():
            slot = SLOT.fullmatch(token)
            if slot is None:
                tagged.append((token, "O"))
            elif slot.group(1).isupper():
                for _ in range(20):  # repeated slots ("{PER} and {PER}") get different entities
                    value, entity_type = entity(slot.group(1), which)
                    if value not in used:
                        break
                used.add(value)
                tagged += entity_tokens(value, entity_type)
            else:
                text = fill(token, lambda name: rng.choice(fillers[name][which]), rng)
                tagged += [(word, "O") for word in text.split()]
        first_word, first_tag = tagged[0]
        return [(first_word[0].upper() + first_word[1:], first_tag)] + tagged[1:]

    seen: set[str] = set()
    out: dict[str, list[list[tuple[str, str]]]] = {}
    for split in SPLITS:
        which = 0 if split == "train" else 1
        n_plain = round(NER_SIZES[split] * NER_NO_ENTITY_SHARE)
        sentences: list[list[tuple[str, str]]] = []
        for templates, count in ((NER_TEMPLATES, NER_SIZES[split] - n_plain), (NER_NO_ENTITY_TEMPLATES, n_plain)):
            for template in template_plan(templates, count, rng):
                while True:
                    tagged = sentence(template, which)
                    key = " ".join(word for word, _ in tagged).lower()
                    if key not in seen:
                        break
                    template = rng.choice(templates)  # this one may be exhausted: try another
                seen.add(key)
                sentences.append(tagged)
        rng.shuffle(sentences)
        out[split] = sentences
    return out


# ----------------------------------------------------------------------------------------------------------------
# Writing and checking
# ----------------------------------------------------------------------------------------------------------------

TASKS_YAML = """\
# Demo tasks for run_mtl.py (used when --tasks is not given). Paths are relative to this file's folder.
# Generated by scripts/make_demo_data.py; see README.md.
tasks:
  - name: topic
    type: classification
    train_file: topic/train.jsonl
    validation_file: topic/validation.jsonl
    test_file: topic/test.jsonl
  - name: ner
    type: ner
    train_file: ner/train.conll
    validation_file: ner/validation.conll
    test_file: ner/test.conll
"""


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(text)


def readme(topic: dict[str, list[dict[str, str]]], ner: dict[str, list[list[tuple[str, str]]]], seed: int) -> str:
    """The README text, with the sizes and label counts of the generated splits."""
    labels = sorted(TOPIC)
    topic_rows = "\n".join(
        f"| {split} | {len(topic[split])} | "
        + " | ".join(str(Counter(row["label"] for row in topic[split])[label]) for label in labels)
        + " |"
        for split in SPLITS
    )
    ner_rows = []
    for split in SPLITS:
        tags = [tag for sent in ner[split] for _, tag in sent]
        entities = Counter(tag[2:] for tag in tags if tag.startswith("B-"))
        ner_rows.append(
            f"| {split} | {len(ner[split])} | {len(tags)} | "
            + " | ".join(str(entities[t]) for t in ENTITY_TYPES)
            + " |"
        )
    return f"""\
# Demo data

A small two-task data set that `run_mtl.py` trains on when it is started without `--tasks`: one sentence
classification task (`topic`) and one named-entity recognition task (`ner`), sharing one encoder. It is meant to
show the multi-task pipeline end to end in a few minutes on a CPU, not to benchmark models.

All sentences were written for this project: they are generated from hand-written templates and hand-written word
lists by `scripts/make_demo_data.py` with a fixed seed ({seed}); running the script again reproduces these files
byte for byte. No sentence is taken from an existing corpus. People, companies, clubs, bands and titles are
invented; place names (cities, countries, rivers, mountains) are real. Each word list (and the list of topic
templates) is split into a part shared by all splits, a train-only part and an evaluation-only part, so validation
and test contain names, topic words and headline patterns never seen in training. No sentence occurs in more than
one split.

License: Apache-2.0, the same as the project.

`tasks.yaml` names both tasks; its paths are relative to its own folder.

## topic (classification)

`topic/{{train,validation,test}}.jsonl`, one JSON object per line: `{{"text": "...", "label": "..."}}`.
Headline-like English sentences with 4 balanced labels: {", ".join(f"`{label}`" for label in labels)}.

| split | sentences | {" | ".join(labels)} |
|---|---|{"---|" * len(labels)}
{topic_rows}

## ner (token classification)

`ner/{{train,validation,test}}.conll`, CoNLL style: one `word TAG` pair per line (separated by one space), a blank
line between sentences. Punctuation marks are separate tokens. Tags are IOB2 over the types `PER`, `ORG` and `LOC`
(labels: `O`, {", ".join(f"`B-{t}`, `I-{t}`" for t in ENTITY_TYPES)}); about 10% of the sentences have no entity.

| split | sentences | tokens | {" | ".join(ENTITY_TYPES)} entities |
|---|---|---|{"---|" * len(ENTITY_TYPES)}
{chr(10).join(ner_rows)}
"""


def write_all(out_dir: Path, seed: int) -> tuple[dict, dict]:
    """Generate both tasks and write every file under ``out_dir``."""
    topic = make_topic(seed)
    ner = make_ner(seed)
    for split in SPLITS:
        write_text(
            out_dir / "topic" / f"{split}.jsonl",
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in topic[split]),
        )
        write_text(
            out_dir / "ner" / f"{split}.conll",
            "\n".join("".join(f"{word} {tag}\n" for word, tag in sent) for sent in ner[split]),
        )
    write_text(out_dir / "tasks.yaml", TASKS_YAML)
    write_text(out_dir / "README.md", readme(topic, ner, seed))
    return topic, ner


def check(out_dir: Path) -> list[str]:
    """Re-read the written files and return the problems found (empty when all is well)."""
    problems: list[str] = []
    texts: dict[str, set[str]] = {}
    for split in SPLITS:
        path = out_dir / "topic" / f"{split}.jsonl"
        labels: Counter[str] = Counter()
        texts[split] = set()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                problems.append(f"{path}:{number}: not JSON ({err})")
                continue
            if set(row) != {"text", "label"} or not row["text"] or row["label"] not in TOPIC:
                problems.append(f"{path}:{number}: bad row {row!r}")
                continue
            labels[row["label"]] += 1
            texts[split].add(row["text"].lower())
        if len(set(labels.values())) != 1 or len(labels) != len(TOPIC):
            problems.append(f"{path}: unbalanced labels {dict(labels)}")

    sentences: dict[str, set[str]] = {}
    valid_tags = {"O"} | {f"{p}-{t}" for p in "BI" for t in ENTITY_TYPES}
    for split in SPLITS:
        path = out_dir / "ner" / f"{split}.conll"
        sentences[split] = set()
        words: list[str] = []
        previous = "O"
        lines = path.read_text(encoding="utf-8").split("\n")
        if lines[-1] != "" or lines[-2] == "":
            problems.append(f"{path}: should end with exactly one newline")
        for number, line in enumerate(lines[:-1] + [""], start=1):
            if not line:
                if not words and number <= len(lines) - 1:
                    problems.append(f"{path}:{number}: empty sentence")
                sentences[split].add(" ".join(words).lower())
                words, previous = [], "O"
                continue
            columns = line.split(" ")
            if len(columns) != 2 or not all(columns) or "\t" in line:
                problems.append(f"{path}:{number}: expected 'word TAG', got {line!r}")
                continue
            word, tag = columns
            if tag not in valid_tags:
                problems.append(f"{path}:{number}: unknown tag {tag!r}")
            elif tag.startswith("I-") and previous[2:] != tag[2:]:
                problems.append(f"{path}:{number}: {tag} after {previous} is not IOB2")
            words.append(word)
            previous = tag
    for name, groups in (("topic", texts), ("ner", sentences)):
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test")):
            if groups[a] & groups[b]:
                problems.append(f"{name}: {len(groups[a] & groups[b])} sentence(s) in both {a} and {b}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED, help=f"random seed (default {SEED})")
    parser.add_argument("--out_dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write (mtl_hf/demo_data)")
    args = parser.parse_args(argv)
    topic, ner = write_all(args.out_dir, args.seed)
    problems = check(args.out_dir)
    for problem in problems:
        print(problem, file=sys.stderr)
    for split in SPLITS:
        n_entities = sum(tag.startswith("B-") for sent in ner[split] for _, tag in sent)
        print(f"{split}: topic {len(topic[split])} sentences, ner {len(ner[split])} sentences / {n_entities} entities")
    print(f"wrote {args.out_dir}" + (f" with {len(problems)} problem(s)" if problems else ""))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
