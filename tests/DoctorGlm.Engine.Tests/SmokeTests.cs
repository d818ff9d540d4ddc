namespace DoctorGlm.Engine.Tests;
public class SmokeTests { [Fact] public void Name() => Assert.Equal("DoctorGlm.Engine", EngineInfo.Name); }
